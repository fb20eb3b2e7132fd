"""The media audit trail: deletions, exports, imports and admin commands.

Records go to ``media.audit_events`` (append-only, see migration 003) and to the log.
They name the item by id, never by content, and carry the client IP and request id of the
request that caused them when there is one.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog
from aiohttp import web

from shared.audit import ACTOR_ADMIN, AuditEntry, Position
from shared.identity import IDENTITY
from shared.keys import REQUEST_ID

MEDIA_DELETE = "media_delete"
EXPORT = "export"
IMPORT_START = "import_start"
IMPORT_END = "import_end"
FSCK_REPAIR = "fsck_repair"

SUCCESS = "success"
FAILURE = "failure"
NOT_FOUND = "not_found"
CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class Origin:
    """Who caused an event and from where."""

    actor: str
    user_id: uuid.UUID | None
    ip: str | None
    request_id: str | None

    @classmethod
    def of(cls, request: web.Request, user_id: uuid.UUID) -> Origin:
        identity = request.get(IDENTITY)
        return cls(actor=str(user_id), user_id=user_id,
                   ip=identity.client_ip if identity is not None else None,
                   request_id=request.get(REQUEST_ID))

    @classmethod
    def background(cls, user_id: uuid.UUID) -> Origin:
        """The service itself acting for a user (an import finishing)."""
        return cls(actor=str(user_id), user_id=user_id, ip=None, request_id=None)

    @classmethod
    def admin(cls) -> Origin:
        return cls(actor=ACTOR_ADMIN, user_id=None, ip=None, request_id=None)


async def record(connection: asyncpg.Connection, origin: Origin, action: str, outcome: str,
                 **detail: Any) -> None:
    """Write the record in the caller's connection (and transaction, if one is open)."""
    await connection.execute(
        "INSERT INTO media.audit_events (action, outcome, actor, user_id, ip, request_id,"
        " detail) VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)",
        action, outcome, origin.actor, origin.user_id, origin.ip, origin.request_id,
        json.dumps(detail))
    logger = structlog.get_logger("audit")
    write = logger.info if outcome in {SUCCESS, CANCELLED} else logger.warning
    write("media_event", media_event=action, outcome=outcome, actor=origin.actor,
          ip=origin.ip, **detail)


async def record_in_pool(pool: asyncpg.Pool, origin: Origin, action: str, outcome: str,
                         **detail: Any) -> None:
    async with pool.acquire() as connection:
        await record(connection, origin, action, outcome, **detail)


async def select_page(connection: asyncpg.Connection, user_id: uuid.UUID, limit: int,
                      after: Position | None) -> list[AuditEntry]:
    """The user's records, newest first, ``limit + 1`` of them to tell whether more exist.

    Commands an administrator ran on the whole deployment (no user attached) are shown
    too: in a single-user deployment they concern the owner.
    """
    rows = await connection.fetch(
        "SELECT id, occurred_at, action, outcome, actor, ip, request_id, detail"
        " FROM media.audit_events"
        " WHERE (user_id = $1 OR (user_id IS NULL AND actor = 'admin'))"
        "   AND ($2::timestamptz IS NULL OR (occurred_at, id) < ($2, $3))"
        " ORDER BY occurred_at DESC, id DESC LIMIT $4",
        user_id, after.occurred_at if after else None, after.id if after else 0, limit + 1)
    return [AuditEntry.from_row(row) for row in rows]
