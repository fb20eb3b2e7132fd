"""The audit trail: every auth event goes to the append-only table and to the log.

Events carry who (user id, username as typed or stored), from where (IP, user agent),
what happened and how it ended, and the request id that ties them to the request log.
Never a password, a hash or a token.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog
from aiohttp import web

from services.auth import store
from shared.identity import IDENTITY, Identity
from shared.keys import REQUEST_ID

# Event names, one per kind of thing the audit trail records.
REGISTER = "register"
LOGIN = "login"
LOCKOUT = "lockout"
LOGOUT = "logout"
PASSWORD_CHANGE = "password_change"  # noqa: S105 - an event name
SESSION_REVOKE = "session_revoke"
ADMIN_RESET = "admin_password_reset"

SUCCESS = "success"
FAILURE = "failure"
REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class Origin:
    """Where an event came from."""

    ip: str | None
    user_agent: str | None
    request_id: str | None
    # ``admin`` for a command run on the server; otherwise the record's user is the actor.
    actor: str | None = None

    @classmethod
    def of(cls, request: web.Request) -> Origin:
        identity: Identity | None = request.get(IDENTITY)
        return cls(
            ip=identity.client_ip if identity else request.remote,
            user_agent=identity.user_agent if identity else None,
            request_id=request.get(REQUEST_ID),
        )


async def record(connection: asyncpg.Connection, origin: Origin, event: str, outcome: str,
                 *, user_id: uuid.UUID | str | None = None, username: str | None = None,
                 **detail: Any) -> None:
    """Write the event in the caller's connection (and transaction, if one is open)."""
    user_id = _uuid(user_id)
    await store.insert_event(connection, event=event, outcome=outcome, user_id=user_id,
                             username=username, ip=origin.ip, user_agent=origin.user_agent,
                             request_id=origin.request_id, detail=detail,
                             actor=_actor(origin, user_id))
    _log(origin, event, outcome, user_id, username, detail)


async def record_repeated(connection: asyncpg.Connection, origin: Origin, event: str,
                          outcome: str, *, window_seconds: int, reason: str,
                          user_id: uuid.UUID | str | None = None, username: str | None = None,
                          **detail: Any) -> None:
    """Like ``record``, for what a stranger can repeat at will (a wrong password, a refusal).

    The first of a kind (event, outcome, reason, client, user, username) in a window is a
    record of its own; the ones after it in that window add to its count instead, so that
    the owner's trail stays readable and bounded however long an attack lasts. Each one is
    still logged.
    """
    user_id = _uuid(user_id)
    parts = (event, outcome, reason, origin.ip or "", str(user_id or ""),
             (username or "").casefold())
    key = hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()
    detail = {"reason": reason, **detail}
    async with connection.transaction():
        await store.lock_repeat_key(connection, key)
        if not await store.count_repeat(connection, key):
            event_id = await store.insert_event(
                connection, event=event, outcome=outcome, user_id=user_id, username=username,
                ip=origin.ip, user_agent=origin.user_agent, request_id=origin.request_id,
                detail=detail, actor=_actor(origin, user_id))
            await store.open_repeat_window(connection, event_id, key, window_seconds)
    _log(origin, event, outcome, user_id, username, detail)


def _uuid(user_id: uuid.UUID | str | None) -> uuid.UUID | None:
    return uuid.UUID(user_id) if isinstance(user_id, str) else user_id


def _actor(origin: Origin, user_id: uuid.UUID | None) -> str | None:
    return origin.actor or (str(user_id) if user_id is not None else None)


def _log(origin: Origin, event: str, outcome: str, user_id: uuid.UUID | None,
         username: str | None, detail: dict[str, Any]) -> None:
    # A fresh proxy per event, so the log always follows the current configuration.
    logger = structlog.get_logger("audit")
    # What monitoring looks for (refusals, lockouts) stays visible at a quieter log level.
    write = logger.info if outcome == SUCCESS and event != LOCKOUT else logger.warning
    write("auth_event", auth_event=event, outcome=outcome,
          user_id=str(user_id) if user_id else None, username=username, ip=origin.ip,
          **detail)
