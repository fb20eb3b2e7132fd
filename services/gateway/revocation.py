"""Revoked tokens: the set in memory and the PostgreSQL listener that keeps it current.

auth records every revocation in ``auth.sessions`` and announces it on the
``tempo_revocations`` channel when the revoking transaction commits. Each gateway loads
``auth.revoked_tokens`` (revoked, unexpired tokens) and applies every notification as it
arrives; after any reconnect it reloads the whole set, since notifications sent while it
was away are lost.

While the listener is disconnected the gateway cannot learn of new revocations. It keeps
serving authenticated requests from the last set for ``Revocation__GraceSeconds`` (a
database restart or a network blip should not log everyone out), then fails closed:
authenticated routes answer 503 until the listener is back and the set reloaded. Public
routes keep working throughout. Before the first successful load there is no set at all,
so authenticated routes answer 503 from the start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Iterable
from typing import Any

import asyncpg
import structlog

from services.gateway import metrics

log = structlog.get_logger("revocation")

CHANNEL = "tempo_revocations"
LOAD_QUERY = "SELECT jti, extract(epoch FROM expires_at)::float8 AS expires_at " \
             "FROM auth.revoked_tokens"

Clock = Callable[[], float]


class RevokedSet:
    """Revoked token ids with their expiry, and whether the set can be trusted right now.

    ``wall`` (Unix time) is for token expiry; ``monotonic`` measures the grace period, so a
    clock step cannot stretch or cut it.
    """

    def __init__(self, grace_seconds: float, *, wall: Clock = time.time,
                 monotonic: Clock = time.monotonic) -> None:
        self._expiry: dict[str, float] = {}
        self._grace = grace_seconds
        self._wall = wall
        self._monotonic = monotonic
        self._loaded = False
        self._connected = False
        self._lost_at: float | None = None
        self._listeners: list[Callable[[str], None]] = []

    def on_revoke(self, callback: Callable[[str], None]) -> None:
        self._listeners.append(callback)

    def __contains__(self, jti: str) -> bool:
        return jti in self._expiry

    def __len__(self) -> int:
        return len(self._expiry)

    def replace(self, rows: Iterable[tuple[str, float]]) -> None:
        """The whole set as loaded after a (re)connect."""
        now = self._wall()
        self._expiry = {jti: expires for jti, expires in rows if expires > now}
        self._loaded = True
        self._connected = True
        self._lost_at = None
        for jti in self._expiry:
            self._announce(jti)
        self._report()

    def add(self, jti: str, expires_at: float) -> None:
        if expires_at <= self._wall():
            return
        self._expiry[jti] = max(expires_at, self._expiry.get(jti, 0.0))
        self._announce(jti)
        self._report()

    def prune(self) -> int:
        now = self._wall()
        expired = [jti for jti, expires in self._expiry.items() if expires <= now]
        for jti in expired:
            del self._expiry[jti]
        self._report()
        return len(expired)

    def disconnected(self) -> None:
        if self._connected:
            self._lost_at = self._monotonic()
        self._connected = False
        metrics.REVOCATION_CONNECTED.set(0)

    @property
    def connected(self) -> bool:
        return self._connected

    def usable(self) -> bool:
        """Whether authenticated requests may be decided against this set."""
        if self._connected:
            return True
        if not self._loaded or self._lost_at is None:
            return False
        return self._monotonic() - self._lost_at <= self._grace

    def _announce(self, jti: str) -> None:
        for callback in self._listeners:
            callback(jti)

    def _report(self) -> None:
        metrics.REVOKED_TOKENS.set(len(self._expiry))
        metrics.REVOCATION_CONNECTED.set(1 if self._connected else 0)


def parse_notification(payload: str) -> tuple[str, float] | None:
    try:
        data: Any = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    jti, expires_at = data.get("jti"), data.get("expiresAt")
    if not isinstance(jti, str) or not jti:
        return None
    if isinstance(expires_at, bool) or not isinstance(expires_at, int | float):
        return None
    return jti, float(expires_at)


class RevocationListener:
    """One dedicated connection that LISTENs, reloads after reconnects, and checks itself."""

    def __init__(self, dsn: str, revoked: RevokedSet, *, check_interval: float,
                 reconnect_delay: float) -> None:
        self._dsn = dsn
        self._revoked = revoked
        self._check_interval = check_interval
        self._reconnect_delay = reconnect_delay
        self._connection: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()
        self._reload_needed = False
        self._stopping = False

    @property
    def connected(self) -> bool:
        return self._revoked.connected

    async def start(self, first_attempt_timeout: float = 5.0) -> None:
        """Try to load before serving; if the database is not there yet, keep trying in
        the background (authenticated routes answer 503 meanwhile)."""
        try:
            await asyncio.wait_for(self._connect(), first_attempt_timeout)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            log.error("revocation_listener_unavailable", error=type(exc).__name__)
            await self._drop()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        self._stopping = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            # A cancellation can be absorbed by a connect attempt's own timeout handling;
            # the flag ends the loop then, and the wait is bounded either way.
            await asyncio.wait({task}, timeout=5)
        await self._drop()

    async def _connect(self) -> None:
        connection = await asyncpg.connect(self._dsn, timeout=5,
                                           server_settings={"application_name":
                                                            "tempo-gateway-revocations"})
        self._connection = connection
        self._lost.clear()
        connection.add_termination_listener(self._on_terminated)
        # LISTEN before loading: a revocation committed in between is then heard, not lost.
        await connection.add_listener(CHANNEL, self._on_notification)
        rows = await connection.fetch(LOAD_QUERY, timeout=10)
        self._revoked.replace((row["jti"], row["expires_at"]) for row in rows)
        log.info("revocation_set_loaded", revoked=len(rows))

    async def _drop(self) -> None:
        self._revoked.disconnected()
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.remove_termination_listener(self._on_terminated)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), 2)
            if not connection.is_closed():
                connection.terminate()

    def _on_terminated(self, _connection: asyncpg.Connection) -> None:
        self._lost.set()

    def _on_notification(self, _connection: Any, _pid: int, _channel: str,
                         payload: str) -> None:
        parsed = parse_notification(payload)
        if parsed is None:
            # A notification we cannot read might be a revocation: reload rather than guess.
            log.warning("revocation_notification_unreadable")
            self._reload_needed = True
            self._lost.set()
            return
        self._revoked.add(*parsed)

    async def _run(self) -> None:
        while not self._stopping:
            if self._connection is None:
                try:
                    await self._connect()
                    log.info("revocation_listener_reconnected")
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError,
                        TimeoutError) as exc:
                    log.warning("revocation_listener_reconnect_failed",
                                error=type(exc).__name__)
                    await self._drop()
                    await asyncio.sleep(self._reconnect_delay)
                    continue
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a
            # cancellation that lands just as the event is set.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._check_interval):
                    await self._lost.wait()
            try:
                await self._check()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError,
                    TimeoutError) as exc:
                log.error("revocation_listener_lost", error=type(exc).__name__)
                await self._drop()
                await asyncio.sleep(self._reconnect_delay)

    async def _check(self) -> None:
        connection = self._connection
        if connection is None or connection.is_closed() or (
                self._lost.is_set() and not self._reload_needed):
            raise asyncpg.InterfaceError("listener connection closed")
        if self._reload_needed:
            self._reload_needed = False
            self._lost.clear()
            rows = await connection.fetch(LOAD_QUERY, timeout=10)
            self._revoked.replace((row["jti"], row["expires_at"]) for row in rows)
            return
        await connection.fetchval("SELECT 1", timeout=max(1.0, self._check_interval))
        self._revoked.prune()
