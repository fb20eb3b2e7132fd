"""What auth and media share about their audit trails: the record shape, paging, retention.

Each service keeps its own append-only table in its own schema; each answers
``GET /<service>/audit`` with the caller's records, newest first, one page at a time; the
gateway merges the two. A record holds when, what, who (a user id or ``admin``), from
where, the request id and the outcome, and never a secret or file content. A record may
stand for several like it (``count``, the last at ``lastTime``): auth counts a stranger's
repeated failures in one record per window rather than one each.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import structlog
from aiohttp import web

from shared.config import Env
from shared.cursors import MAX_CURSOR_LENGTH, cursor_id, cursor_time, decode_cursor, encode_cursor
from shared.keys import DB_POOL
from shared.web import page_limit

ACTOR_ADMIN = "admin"
SUCCESS = "success"
FAILURE = "failure"

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100

# The database functions refuse to purge anything younger than this, whoever calls them:
# a compromised service cannot shorten the trail below it by asking for a short retention.
MIN_RETENTION_DAYS = 30
DEFAULT_RETENTION_DAYS = 365
MAX_RETENTION_DAYS = 3650
PURGE_INTERVAL_SECONDS = 6 * 3600

log = structlog.get_logger("audit")


def retention_days(env: Env) -> int:
    """``Audit__RetentionDays``: how long records are kept before the purge removes them."""
    return env.int("Audit__RetentionDays", DEFAULT_RETENTION_DAYS,
                   minimum=MIN_RETENTION_DAYS, maximum=MAX_RETENTION_DAYS)


@dataclass(frozen=True, slots=True)
class Position:
    """Where a page ended: the last record's time and id (ids break ties in time)."""

    occurred_at: datetime
    id: int


def encode_position(position: Position) -> str:
    return encode_cursor({"t": position.occurred_at.isoformat(), "i": str(position.id)})


def decode_position(value: str) -> Position:
    data = decode_cursor(value, max_length=MAX_CURSOR_LENGTH)
    return Position(cursor_time(data.get("t")), cursor_id(data.get("i")))


def parse_limit(value: str | None) -> int:
    return page_limit(value, default=DEFAULT_PAGE_SIZE, maximum=MAX_PAGE_SIZE)


def page_query(request: web.Request) -> tuple[int, Position | None]:
    limit = parse_limit(request.query.get("limit"))
    cursor = request.query.get("cursor")
    return limit, (decode_position(cursor) if cursor else None)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    occurred_at: datetime
    action: str
    outcome: str
    actor: str
    ip: str | None
    request_id: str | None
    detail: dict[str, Any] = field(default_factory=dict)
    # How many times it happened: repeats of a failure within one window share a record.
    count: int = 1
    last_at: datetime | None = None

    def to_json(self, service: str) -> dict[str, Any]:
        return {
            "time": self.occurred_at.isoformat(),
            "service": service,
            "action": self.action,
            "outcome": self.outcome,
            "actor": self.actor,
            "clientIp": self.ip,
            "requestId": self.request_id,
            "detail": self.detail,
            "count": self.count,
            "lastTime": self.last_at.isoformat() if self.last_at else None,
            "cursor": encode_position(Position(self.occurred_at, self.id)),
        }

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> AuditEntry:
        detail = row["detail"]
        if isinstance(detail, str):
            detail = json.loads(detail)
        return cls(id=row["id"], occurred_at=row["occurred_at"], action=row["action"],
                   outcome=row["outcome"], actor=row["actor"], ip=row["ip"],
                   request_id=row["request_id"], detail=dict(detail or {}),
                   count=row.get("count") or 1, last_at=row.get("last_at"))


def page_json(entries: list[AuditEntry], limit: int, service: str) -> dict[str, Any]:
    """``entries`` holds up to ``limit + 1`` rows: the extra one only says there is more."""
    return {"items": [entry.to_json(service) for entry in entries[:limit]],
            "more": len(entries) > limit}


async def purge(pool: asyncpg.Pool, schema: str, days: int) -> int:
    """Remove records older than ``days`` through the schema's privileged purge function."""
    if schema not in {"auth", "media"}:
        raise ValueError(f"no audit trail in schema {schema!r}")
    async with pool.acquire() as connection:
        return await connection.fetchval(f"SELECT {schema}.purge_audit($1)", days)


def purge_context(schema: str, days: int, interval: float = PURGE_INTERVAL_SECONDS
                  ) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context that purges expired records at start and then periodically."""

    async def run_forever(app: web.Application) -> None:
        while True:
            try:
                removed = await purge(app[DB_POOL], schema, days)
                if removed:
                    log.info("audit_purged", schema=schema, records=removed,
                             retention_days=days)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                log.warning("audit_purge_failed", schema=schema, exc_info=True)
            await asyncio.sleep(interval)

    async def context(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(run_forever(app), name=f"{schema}-audit-purge")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return context
