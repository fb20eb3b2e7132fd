"""Failed attempts: the lockout count kept per key, and the refusal once it is reached.

A key is a username's (logins and password changes count against the name) or, for wrong
setup codes, a client's. Failures and refusals go to the audit trail through
``record_repeated``: a stranger repeating them fills one record per window, not one each.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

import asyncpg

from services.auth import audit, metrics, store
from services.auth.audit import Origin
from services.auth.domain import locked_for, register_failure
from shared.errors import RateLimitedError

if TYPE_CHECKING:
    from services.auth.accounts import Services

LOCKED_MESSAGE = "Too many failed attempts. Try again later."


@dataclass(frozen=True, slots=True)
class Attempt:
    """What is being tried, whose count it adds to, and how the trail names it."""

    event: str
    key: str
    user_id: uuid.UUID | None = None
    username: str | None = None


def locked_error(wait: int) -> RateLimitedError:
    return RateLimitedError(wait, LOCKED_MESSAGE, code="locked_out")


async def refuse_if_locked(services: Services, connection: asyncpg.Connection,
                           origin: Origin, attempt: Attempt) -> None:
    """429 with Retry-After, recorded, while the key is locked out."""
    now = await store.now(connection)
    wait = locked_for(await store.select_failures(connection, attempt.key), now)
    if wait is None:
        return
    if attempt.event != audit.REGISTER:
        metrics.LOGIN_FAILURES.labels(reason="locked_out").inc()
    await audit.record_repeated(connection, origin, attempt.event, audit.REFUSED,
                                window_seconds=services.settings.audit_repeat_window_seconds,
                                reason="locked_out", user_id=attempt.user_id,
                                username=attempt.username)
    raise locked_error(wait)


async def record_failure(services: Services, origin: Origin, attempt: Attempt, *,
                         outcome: str = audit.FAILURE, reason: str) -> None:
    """Count one failure against the key; lock it when the count reaches the threshold."""
    async with services.pool.acquire() as connection, connection.transaction():
        await store.lock_failures(connection, attempt.key)
        record = await store.select_failures(connection, attempt.key, for_update=True)
        now = await store.now(connection)
        result = register_failure(record, services.lockout, now)
        await store.save_failures(connection, attempt.key, result.record)
        await audit.record_repeated(connection, origin, attempt.event, outcome,
                                    window_seconds=services.settings.audit_repeat_window_seconds,
                                    reason=reason, user_id=attempt.user_id,
                                    username=attempt.username)
        if result.locked_now:
            assert result.record.locked_until is not None
            metrics.LOCKOUTS.inc()
            await audit.record(
                connection, origin, audit.LOCKOUT, audit.SUCCESS, user_id=attempt.user_id,
                username=attempt.username, lockouts=result.record.lockouts,
                locked_seconds=int((result.record.locked_until - now).total_seconds()))
