"""The audit trail: every auth event goes to the append-only table and to the log.

Events carry who (user id, username as typed or stored), from where (IP, user agent),
what happened and how it ended, and the request id that ties them to the request log.
Never a password, a hash or a token.
"""

from __future__ import annotations

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
    if isinstance(user_id, str):
        user_id = uuid.UUID(user_id)
    actor = origin.actor or (str(user_id) if user_id is not None else None)
    await store.insert_event(connection, event=event, outcome=outcome, user_id=user_id,
                             username=username, ip=origin.ip, user_agent=origin.user_agent,
                             request_id=origin.request_id, detail=detail, actor=actor)
    # A fresh proxy per event, so the log always follows the current configuration.
    logger = structlog.get_logger("audit")
    # What monitoring looks for (refusals, lockouts) stays visible at a quieter log level.
    write = logger.info if outcome == SUCCESS and event != LOCKOUT else logger.warning
    write("auth_event", auth_event=event, outcome=outcome,
          user_id=str(user_id) if user_id else None, username=username, ip=origin.ip,
          **detail)
