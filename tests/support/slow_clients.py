"""Slow clients, as the gateway and nginx tests send them: many connections from distinct
loopback addresses, each declaring a body and then trickling it a byte at a time, while the
owner's requests are timed alongside."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

# Linux answers for all of 127.0.0.0/8 on loopback, so a client socket may be bound to any
# of these as its source address: twenty clients, as far as any server can tell.
ATTACK_ADDRESSES = tuple(f"127.0.0.{n}" for n in range(2, 22))


@dataclass
class Trickle:
    """``per_address`` connections from each of ``addresses``; each sends ``head`` and then
    one body byte every ``interval`` seconds until it is answered or ``duration`` ends."""

    host: str
    port: int
    head: bytes
    addresses: tuple[str, ...] = ATTACK_ADDRESSES
    per_address: int = 5
    interval: float = 0.5
    duration: float = 4.0
    ssl_context: ssl.SSLContext | None = None
    server_hostname: str | None = None
    # The first bytes each connection was answered with (b"" if none by the end).
    answers: list[bytes] = field(default_factory=list)
    connected: int = 0

    async def run(self, ready: asyncio.Event) -> None:
        """Sets ``ready`` once every connection has sent its head."""
        count = len(self.addresses) * self.per_address

        async def one(address: str) -> None:
            self.answers.append(await self._connection(address, count, ready))

        await asyncio.gather(*(one(address) for address in self.addresses
                               for _ in range(self.per_address)))

    async def _connection(self, address: str, count: int, all_in: asyncio.Event) -> bytes:
        loop = asyncio.get_running_loop()
        until = loop.time() + self.duration
        reader, writer = await asyncio.open_connection(
            self.host, self.port, local_addr=(address, 0), ssl=self.ssl_context,
            server_hostname=self.server_hostname)
        answer = asyncio.ensure_future(reader.read(65536))
        try:
            writer.write(self.head)
            await writer.drain()
            self.connected += 1
            if self.connected == count:
                all_in.set()
            while loop.time() < until:
                done, _ = await asyncio.wait({answer}, timeout=self.interval)
                if done:
                    return answer.result()
                writer.write(b" ")
                await writer.drain()
            return b""
        except (ConnectionError, ssl.SSLError):
            return b"closed"
        finally:
            answer.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, ssl.SSLError):
                await answer
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()


def slow_login_head(host: str) -> bytes:
    return (f"POST /api/auth/login HTTP/1.1\r\nHost: {host}\r\n"
            "Content-Type: application/json\r\nContent-Length: 65000\r\n\r\n").encode()


Probe = Callable[[], Awaitable[int]]


async def probe_during(attack: Trickle, probes: dict[str, Probe], seconds: float,
                       pause: float = 0.1) -> list[tuple[str, int, float]]:
    """Start the attack, wait until its connections are in, then run the probes in turn,
    ``pause`` seconds between rounds, for ``seconds``; each result is (name, status,
    seconds taken)."""
    loop = asyncio.get_running_loop()
    ready = asyncio.Event()
    running = asyncio.ensure_future(attack.run(ready))
    results: list[tuple[str, int, float]] = []
    try:
        waiting = asyncio.ensure_future(ready.wait())
        await asyncio.wait({running, waiting}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        assert ready.is_set(), "the slow clients did not all get in"
        until = loop.time() + seconds
        while loop.time() < until:
            for name, probe in probes.items():
                started = loop.time()
                try:
                    # Bounded so that a starved probe fails the test instead of hanging it.
                    status = await asyncio.wait_for(probe(), 10)
                except TimeoutError:
                    status = 0
                results.append((name, status, loop.time() - started))
            await asyncio.sleep(pause)
    finally:
        await running
    return results
