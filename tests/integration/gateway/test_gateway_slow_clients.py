"""Slow clients hold nothing an upstream needs: small bodies are read whole under a deadline
before an upstream is called, streamed bodies keep a minimum rate, and each client has a
cap on its streamed uploads and on the upstream connections it holds at its own pace."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Awaitable, Callable

from aiohttp.test_utils import TestServer

from tests.integration.gateway.gateway_helpers import Browser, EchoUpstream, server_url, wait_until
from tests.support import AUTH_COOKIE
from tests.support.slow_clients import Trickle, probe_during, slow_login_head

# Short deadlines keep the attack bounded; the auth budget is wide so that the owner's
# probes measure the pools, not the login rate limit.
ATTACK_ENV = {"Limits__JsonBodyDeadlineSeconds": "2",
              "RateLimit__AuthBurst": "500", "RateLimit__AuthPerMinute": "1000"}
HOLD_ENV = {"Limits__StreamMinBytesPerSecond": "0", "Limits__BodyIdleTimeoutSeconds": "30"}

GatewayFactory = Callable[..., Awaitable[TestServer]]


def upload_head(gateway: TestServer, token: str, length: int = 100_000,
                path: str = "/api/media") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{gateway.port}\r\n"
            f"Cookie: {AUTH_COOKIE}={token}\r\nOrigin: http://127.0.0.1:{gateway.port}\r\n"
            "Content-Type: application/octet-stream\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()


class CountingUpstream:
    """A bare TCP upstream that counts the connections it is given and answers each
    request it reads whole with an empty JSON object."""

    def __init__(self) -> None:
        self.connections = 0
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, ValueError):
            head = await reader.readuntil(b"\r\n\r\n")
            length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            await reader.readexactly(length)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 2\r\nConnection: close\r\n\r\n{}")
            await writer.drain()
        writer.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def open_upload(gateway: TestServer, token: str, *, source: str = "127.0.0.1",
                      first: bytes = b"x" * 1000
                      ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port,
                                                   local_addr=(source, 0))
    writer.write(upload_head(gateway, token) + first)
    await writer.drain()
    return reader, writer


async def answer_of(reader: asyncio.StreamReader) -> tuple[bytes, dict]:
    """The status line and the JSON body of a short answer."""
    raw = await asyncio.wait_for(reader.read(65536), 5)
    head, _, body = raw.partition(b"\r\n\r\n")
    return head, json.loads(body) if body else {}


async def refused_upload(gateway: TestServer, token: str) -> tuple[bytes, dict]:
    reader, writer = await open_upload(gateway, token)
    try:
        return await answer_of(reader)
    finally:
        writer.close()


async def test_slow_login_bodies_from_twenty_addresses_leave_auth_answering(
        make_gateway: GatewayFactory, browser: Browser) -> None:
    gateway = await make_gateway(**ATTACK_ENV)
    owner = Browser(browser.session, server_url(gateway))
    await owner.sign_up()

    async def status(call: Awaitable) -> int:
        return (await call).status

    probes = {
        "me": lambda: status(owner.request("GET", "/api/auth/me")),
        "registration-available": lambda: status(
            owner.request("GET", "/api/auth/registration-available")),
        "sessions": lambda: status(owner.request("GET", "/api/auth/sessions")),
        "login": lambda: status(owner.login()),
    }
    attack = Trickle("127.0.0.1", gateway.port, slow_login_head(f"127.0.0.1:{gateway.port}"),
                     duration=3.5)
    results = await probe_during(attack, probes, seconds=2.5)

    assert {name for name, _, _ in results} == set(probes)
    late = [(name, code, round(took, 2)) for name, code, took in results
            if code != 200 or took > 1.0]
    assert late == []
    # Each slow body was cut at the gateway's deadline.
    assert len(attack.answers) == 100
    assert all(answer.startswith(b"HTTP/1.1 408 ") for answer in attack.answers)
    assert (await owner.request("POST", "/api/auth/logout")).status in (200, 204)


async def test_small_body_too_slow_is_408_and_never_reaches_an_upstream(
        make_gateway: GatewayFactory, env_for: Callable[..., dict[str, str]]) -> None:
    upstream = CountingUpstream()
    auth_url = await upstream.start()
    try:
        gateway = await make_gateway(env_for(**{"Limits__JsonBodyDeadlineSeconds": "0.5",
                                                "Upstreams__Auth": auth_url}))
        host = f"127.0.0.1:{gateway.port}"
        for framing, first in (("Content-Length: 100", b'{"user'),
                               ("Transfer-Encoding: chunked", b'6\r\n{"user\r\n')):
            reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
            try:
                writer.write(f"POST /api/auth/login HTTP/1.1\r\nHost: {host}\r\n"
                             f"Content-Type: application/json\r\n{framing}\r\n\r\n".encode()
                             + first)
                await writer.drain()
                head, body = await answer_of(reader)
                assert await asyncio.wait_for(reader.read(), 5) == b""  # closed
            finally:
                writer.close()
            assert head.startswith(b"HTTP/1.1 408 "), framing
            assert b"application/problem+json" in head
            assert b"connection: close" in head.lower()
            assert body["code"] == "request_timeout"
        assert upstream.connections == 0

        # The same body sent whole goes through: the count above can see a connection.
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        try:
            writer.write(f"POST /api/auth/login HTTP/1.1\r\nHost: {host}\r\n"
                         "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
                         .encode())
            head, _ = await answer_of(reader)
        finally:
            writer.close()
        assert head.startswith(b"HTTP/1.1 200 ")
        assert upstream.connections == 1
    finally:
        await upstream.stop()


async def test_chunked_json_body_over_the_limit_is_413_before_any_upstream_connection(
        make_gateway: GatewayFactory, env_for: Callable[..., dict[str, str]]) -> None:
    upstream = CountingUpstream()
    auth_url = await upstream.start()
    try:
        gateway = await make_gateway(env_for(Upstreams__Auth=auth_url))
        block = b" " * 16_384
        chunk = f"{len(block):x}\r\n".encode() + block + b"\r\n"
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        try:
            writer.write(f"POST /api/auth/login HTTP/1.1\r\nHost: 127.0.0.1:{gateway.port}\r\n"
                         "Content-Type: application/json\r\n"
                         "Transfer-Encoding: chunked\r\n\r\n".encode() + chunk * 5)
            await writer.drain()
            head, body = await answer_of(reader)
        finally:
            writer.close()
        assert head.startswith(b"HTTP/1.1 413 ")
        assert body["code"] == "payload_too_large"
        assert upstream.connections == 0
    finally:
        await upstream.stop()


async def test_streamed_upload_below_the_minimum_rate_is_408_and_the_upstream_aborted(
        make_gateway: GatewayFactory, browser: Browser, echo: EchoUpstream) -> None:
    gateway = await make_gateway(**{"Limits__StreamMinBytesPerSecond": "1000",
                                    "Limits__StreamRateWindowSeconds": "1",
                                    "Limits__BodyIdleTimeoutSeconds": "30"})
    client = Browser(browser.session, server_url(gateway))
    token = await client.sign_up()
    reader, writer = await open_upload(gateway, token, first=b"x" * 100)
    try:
        answer = asyncio.ensure_future(answer_of(reader))
        # About 100 bytes a second: never idle for long, always far below the rate.
        for _ in range(50):
            if answer.done():
                break
            writer.write(b"x" * 10)
            await writer.drain()
            await asyncio.sleep(0.1)
        head, body = await answer
    finally:
        writer.close()
    assert head.startswith(b"HTTP/1.1 408 ")
    assert body["code"] == "request_timeout"
    assert await wait_until(lambda: echo.finished.is_set(), timeout=5)
    assert not echo.received[-1].complete
    assert echo.received[-1].error is not None


async def test_streamed_upload_at_a_steady_rate_above_the_minimum_completes(
        make_gateway: GatewayFactory, browser: Browser, echo: EchoUpstream) -> None:
    gateway = await make_gateway(**{"Limits__StreamMinBytesPerSecond": "1000",
                                    "Limits__StreamRateWindowSeconds": "0.4"})
    client = Browser(browser.session, server_url(gateway))
    token = await client.sign_up()
    payload = os.urandom(8_000)
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        writer.write(upload_head(gateway, token, len(payload)))
        # 400 bytes every 0.1 s, 4000 bytes a second, for two seconds: five full windows.
        for start in range(0, len(payload), 400):
            writer.write(payload[start:start + 400])
            await writer.drain()
            await asyncio.sleep(0.1)
        head, body = await answer_of(reader)
    finally:
        writer.close()
    assert head.startswith(b"HTTP/1.1 200 ")
    assert body["size"] == len(payload)


async def test_streamed_uploads_per_client_are_capped_with_429(
        make_gateway: GatewayFactory, browser: Browser, echo: EchoUpstream) -> None:
    gateway = await make_gateway(**HOLD_ENV, Limits__StreamsPerClient="2")
    client = Browser(browser.session, server_url(gateway))
    token = await client.sign_up()
    held = [await open_upload(gateway, token) for _ in range(2)]
    try:
        assert await wait_until(lambda: len(echo.received) == 2)
        head, body = await refused_upload(gateway, token)
        assert head.startswith(b"HTTP/1.1 429 ")
        assert b"retry-after: " in head.lower()
        assert b"connection: close" in head.lower()
        assert body["code"] == "too_many_uploads"
        assert len(echo.received) == 2

        # Another client is not held back by this one's uploads.
        other = await open_upload(gateway, token, source="127.0.0.2")
        held.append(other)
        assert await wait_until(lambda: len(echo.received) == 3)

        # A finished upload gives its slot back.
        held.pop(0)[1].close()
        assert await wait_until(lambda: echo.finished.is_set())
        await asyncio.sleep(0.1)
        held.append(await open_upload(gateway, token))
        assert await wait_until(lambda: len(echo.received) == 4)
    finally:
        for _, writer in held:
            writer.close()


async def test_one_client_holds_at_most_its_share_of_an_upstream_pool(
        make_gateway: GatewayFactory, browser: Browser, echo: EchoUpstream) -> None:
    gateway = await make_gateway(**HOLD_ENV, Limits__StreamsPerClient="10",
                                 Upstreams__PoolSize="4", Upstreams__InFlightPerClient="2")
    client = Browser(browser.session, server_url(gateway))
    token = await client.sign_up()
    held = [await open_upload(gateway, token) for _ in range(2)]
    try:
        assert await wait_until(lambda: len(echo.received) == 2)
        head, body = await refused_upload(gateway, token)
        assert head.startswith(b"HTTP/1.1 429 ")
        assert body["code"] == "too_many_in_flight"
        # A download the client reads at its own pace counts the same way.
        response = await client.request("GET", "/api/media/abc/content?stream=200000")
        assert response.status == 429
        assert (await response.json())["code"] == "too_many_in_flight"
        # Small answers are read whole before the client is written to: not counted.
        assert (await client.request("GET", "/api/media")).status == 200

        # The rest of the pool is there for everyone else.
        seen = len(echo.received)
        held.append(await open_upload(gateway, token, source="127.0.0.2"))
        assert await wait_until(lambda: len(echo.received) == seen + 1)
        assert (await client.request("GET", "/api/auth/me")).status == 200
    finally:
        for _, writer in held:
            writer.close()


async def test_ready_and_auth_answer_while_media_pool_is_full(
        make_gateway: GatewayFactory, browser: Browser, echo: EchoUpstream) -> None:
    gateway = await make_gateway(**HOLD_ENV, Upstreams__PoolSize="2",
                                 Upstreams__InFlightPerClient="1")
    client = Browser(browser.session, server_url(gateway))
    token = await client.sign_up()
    held = [await open_upload(gateway, token, source=source)
            for source in ("127.0.0.2", "127.0.0.3")]
    try:
        assert await wait_until(lambda: len(echo.received) == 2)
        ready = await asyncio.gather(*(client.request("GET", "/ready") for _ in range(5)))
        assert [response.status for response in ready] == [200] * 5
        assert (await client.request("GET", "/api/auth/me")).status == 200
    finally:
        for _, writer in held:
            writer.close()
