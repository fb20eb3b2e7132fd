"""Background upkeep: expired sessions, stale failed-login records, and the counts of audit
records the retention purge has removed are deleted."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import structlog
from aiohttp import web

from services.auth import store
from services.auth.keys import AUTH_SETTINGS
from shared.keys import DB_POOL
from shared.periodic import periodic

log = structlog.get_logger("maintenance")


async def purge(pool: asyncpg.Pool, stale_after: timedelta) -> tuple[int, int, int]:
    """Delete expired sessions, failure records untouched for ``stale_after``, and repeat
    counts whose audit record is gone; returns how many of each.

    An expired session needs no revocation entry: the gateway refuses expired tokens.
    """
    async with pool.acquire() as connection:
        sessions = await store.delete_expired_sessions(connection)
        cutoff = await store.now(connection) - stale_after
        failures = await store.delete_stale_failures(connection, cutoff)
        repeats = await store.delete_orphan_repeats(connection)
    return sessions, failures, repeats


async def _purge_once(pool: asyncpg.Pool, stale_after: timedelta) -> None:
    try:
        sessions, failures, repeats = await purge(pool, stale_after)
        if sessions or failures or repeats:
            log.info("purged", sessions=sessions, failure_records=failures,
                     audit_repeat_counts=repeats)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
        # The database may be restarting; the next round tries again.
        log.warning("purge_failed", exc_info=True)


async def purge_context(app: web.Application) -> AsyncIterator[None]:
    """A cleanup context that runs the purge every ``Auth__SessionPurgeIntervalSeconds``."""
    settings = app[AUTH_SETTINGS]
    # A failure record matters for at most a window plus the longest lock.
    stale_after = timedelta(seconds=settings.lockout_window_seconds
                            + settings.lockout_max_seconds)
    pool = app[DB_POOL]
    async with periodic("auth-purge", settings.purge_interval_seconds,
                        lambda: _purge_once(pool, stale_after)):
        yield
