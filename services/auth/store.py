"""asyncpg queries of the auth service. Functions take a connection and return dataclasses.

Every table is schema-qualified and every value a parameter. Revoking sessions only sets
``revoked_at``: the trigger in the schema announces each revocation when the transaction
commits (see migrations/001_initial.sql).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from services.auth.domain import FailureRecord
from shared.audit import AuditEntry, Position
from shared.errors import ForbiddenError

REVOCATION_CHANNEL = "tempo_revocations"


class RegistrationClosedError(ForbiddenError):
    code = "registration_closed"
    message = "Registration is closed: an account already exists."


@dataclass(frozen=True, slots=True)
class User:
    id: uuid.UUID
    username: str
    password_hash: str
    created_at: datetime
    last_login_at: datetime | None


@dataclass(frozen=True, slots=True)
class Session:
    id: uuid.UUID
    jti: str
    user_id: uuid.UUID
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    ip: str | None
    user_agent: str | None


@dataclass(frozen=True, slots=True)
class Revoked:
    jti: str
    expires_at: datetime


def _user(row: asyncpg.Record | None) -> User | None:
    return None if row is None else User(**dict(row))


def _session(row: asyncpg.Record) -> Session:
    return Session(**dict(row))


# ----------------------------------------------------------------------------- users

async def registration_taken(connection: asyncpg.Connection) -> bool:
    return bool(await connection.fetchval(
        "SELECT EXISTS (SELECT 1 FROM auth.registration_lock)"))


async def take_registration_lock(connection: asyncpg.Connection, user_id: uuid.UUID) -> None:
    """Claim the one-time registration inside the caller's transaction.

    A concurrent registration waits here until the first one commits (and then fails) or
    rolls back (and then proceeds).
    """
    try:
        await connection.execute(
            "INSERT INTO auth.registration_lock (singleton, user_id) VALUES (true, $1)",
            user_id)
    except asyncpg.UniqueViolationError:
        raise RegistrationClosedError() from None


async def insert_user(connection: asyncpg.Connection, user_id: uuid.UUID, username: str,
                      username_key: str, password_hash: str) -> User:
    try:
        row = await connection.fetchrow(
            "INSERT INTO auth.users (id, username, username_key, password_hash)"
            " VALUES ($1, $2, $3, $4)"
            " RETURNING id, username, password_hash, created_at, last_login_at",
            user_id, username, username_key, password_hash)
    except asyncpg.UniqueViolationError:
        raise RegistrationClosedError() from None
    user = _user(row)
    assert user is not None
    return user


async def select_user_by_key(connection: asyncpg.Connection, username_key: str) -> User | None:
    return _user(await connection.fetchrow(
        "SELECT id, username, password_hash, created_at, last_login_at FROM auth.users"
        " WHERE username_key = $1", username_key))


async def select_user_by_id(connection: asyncpg.Connection, user_id: uuid.UUID) -> User | None:
    return _user(await connection.fetchrow(
        "SELECT id, username, password_hash, created_at, last_login_at FROM auth.users"
        " WHERE id = $1", user_id))


async def select_password_hashes(connection: asyncpg.Connection) -> list[str]:
    """Every stored hash (Tempo holds one): their cost is what unknown names are timed at."""
    return [row["password_hash"] for row in await connection.fetch(
        "SELECT password_hash FROM auth.users")]


async def update_password_hash(connection: asyncpg.Connection, user_id: uuid.UUID,
                               password_hash: str) -> None:
    await connection.execute(
        "UPDATE auth.users SET password_hash = $2, password_changed_at = now()"
        " WHERE id = $1", user_id, password_hash)


async def replace_password_hash(connection: asyncpg.Connection, user_id: uuid.UUID,
                                old_hash: str, new_hash: str, *, new_password: bool) -> bool:
    """Swap the hash only if it is still ``old_hash``, so that neither a rehash nor a
    password change undoes a change made meanwhile. A rehash keeps the password's date."""
    status = await connection.execute(
        "UPDATE auth.users SET password_hash = $3, password_changed_at ="
        " CASE WHEN $4 THEN now() ELSE password_changed_at END"
        " WHERE id = $1 AND password_hash = $2", user_id, old_hash, new_hash, new_password)
    return status.endswith(" 1")


async def update_last_login(connection: asyncpg.Connection, user_id: uuid.UUID) -> None:
    await connection.execute("UPDATE auth.users SET last_login_at = now() WHERE id = $1",
                             user_id)


# -------------------------------------------------------------------------- sessions

async def insert_session(connection: asyncpg.Connection, *, user_id: uuid.UUID, jti: str,
                         expires_at: datetime, ip: str | None,
                         user_agent: str | None) -> Session:
    row = await connection.fetchrow(
        "INSERT INTO auth.sessions (id, jti, user_id, expires_at, ip, user_agent)"
        " VALUES ($1, $2, $3, $4, $5, $6)"
        " RETURNING id, jti, user_id, created_at, expires_at, revoked_at, ip, user_agent",
        uuid.uuid4(), jti, user_id, expires_at, ip, user_agent)
    return _session(row)


async def select_active_session(connection: asyncpg.Connection, user_id: uuid.UUID,
                                jti: str) -> Session | None:
    row = await connection.fetchrow(
        "SELECT id, jti, user_id, created_at, expires_at, revoked_at, ip, user_agent"
        " FROM auth.sessions"
        " WHERE jti = $1 AND user_id = $2 AND revoked_at IS NULL AND expires_at > now()",
        jti, user_id)
    return None if row is None else _session(row)


async def select_active_sessions(connection: asyncpg.Connection,
                                 user_id: uuid.UUID) -> list[Session]:
    rows = await connection.fetch(
        "SELECT id, jti, user_id, created_at, expires_at, revoked_at, ip, user_agent"
        " FROM auth.sessions"
        " WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > now()"
        " ORDER BY created_at DESC, id", user_id)
    return [_session(row) for row in rows]


async def select_session(connection: asyncpg.Connection, session_id: uuid.UUID,
                         user_id: uuid.UUID) -> Session | None:
    row = await connection.fetchrow(
        "SELECT id, jti, user_id, created_at, expires_at, revoked_at, ip, user_agent"
        " FROM auth.sessions"
        " WHERE id = $1 AND user_id = $2", session_id, user_id)
    return None if row is None else _session(row)


async def revoke_session_by_jti(connection: asyncpg.Connection, user_id: uuid.UUID, jti: str,
                                reason: str) -> list[Revoked]:
    rows = await connection.fetch(
        "UPDATE auth.sessions SET revoked_at = now(), revoked_reason = $3"
        " WHERE jti = $1 AND user_id = $2 AND revoked_at IS NULL"
        " RETURNING jti, expires_at", jti, user_id, reason)
    return [Revoked(row["jti"], row["expires_at"]) for row in rows]


async def revoke_session_by_id(connection: asyncpg.Connection, user_id: uuid.UUID,
                               session_id: uuid.UUID, reason: str) -> list[Revoked]:
    rows = await connection.fetch(
        "UPDATE auth.sessions SET revoked_at = now(), revoked_reason = $3"
        " WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL"
        " RETURNING jti, expires_at", session_id, user_id, reason)
    return [Revoked(row["jti"], row["expires_at"]) for row in rows]


async def revoke_user_sessions(connection: asyncpg.Connection, user_id: uuid.UUID,
                               reason: str) -> list[Revoked]:
    """Revoke every unexpired session of the user (expired ones need no announcement)."""
    rows = await connection.fetch(
        "UPDATE auth.sessions SET revoked_at = now(), revoked_reason = $2"
        " WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > now()"
        " RETURNING jti, expires_at", user_id, reason)
    return [Revoked(row["jti"], row["expires_at"]) for row in rows]


async def delete_expired_sessions(connection: asyncpg.Connection) -> int:
    status = await connection.execute("DELETE FROM auth.sessions WHERE expires_at <= now()")
    return int(status.split()[-1])


# ------------------------------------------------------------------ failed logins

async def select_failures(connection: asyncpg.Connection, username_key: str,
                          *, for_update: bool = False) -> FailureRecord | None:
    query = ("SELECT failures, window_started_at, locked_until, lockouts"
             " FROM auth.login_failures WHERE username_key = $1")
    if for_update:
        query += " FOR UPDATE"
    row = await connection.fetchrow(query, username_key)
    return None if row is None else FailureRecord(**dict(row))


async def lock_failures(connection: asyncpg.Connection, username_key: str) -> None:
    """Make sure a row exists and hold its lock for the rest of the transaction, so that
    concurrent failures for one username are counted one after another."""
    await connection.execute(
        "INSERT INTO auth.login_failures (username_key) VALUES ($1)"
        " ON CONFLICT (username_key) DO NOTHING", username_key)


async def save_failures(connection: asyncpg.Connection, username_key: str,
                        record: FailureRecord) -> None:
    await connection.execute(
        "INSERT INTO auth.login_failures"
        " (username_key, failures, window_started_at, locked_until, lockouts, updated_at)"
        " VALUES ($1, $2, $3, $4, $5, now())"
        " ON CONFLICT (username_key) DO UPDATE SET failures = EXCLUDED.failures,"
        " window_started_at = EXCLUDED.window_started_at,"
        " locked_until = EXCLUDED.locked_until, lockouts = EXCLUDED.lockouts,"
        " updated_at = now()",
        username_key, record.failures, record.window_started_at, record.locked_until,
        record.lockouts)


async def clear_failures(connection: asyncpg.Connection, username_key: str) -> None:
    await connection.execute("DELETE FROM auth.login_failures WHERE username_key = $1",
                             username_key)


async def delete_stale_failures(connection: asyncpg.Connection, older_than: datetime) -> int:
    status = await connection.execute(
        "DELETE FROM auth.login_failures WHERE updated_at < $1"
        " AND (locked_until IS NULL OR locked_until < $1)", older_than)
    return int(status.split()[-1])


# ---------------------------------------------------------------------------- audit

async def insert_event(connection: asyncpg.Connection, *, event: str, outcome: str,
                       user_id: uuid.UUID | None, username: str | None, ip: str | None,
                       user_agent: str | None, request_id: str | None,
                       detail: Mapping[str, Any] | None = None,
                       actor: str | None = None) -> int:
    """Append one record; returns its id."""
    return await connection.fetchval(
        "INSERT INTO auth.auth_events"
        " (event, outcome, user_id, username, ip, user_agent, request_id, detail, actor)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9) RETURNING id",
        event, outcome, user_id, username, ip, user_agent, request_id,
        json.dumps(dict(detail or {})), actor)


async def lock_repeat_key(connection: asyncpg.Connection, repeat_key: str) -> None:
    """Serialise the repeats of one kind until the caller's transaction ends, so that two
    at once cannot both open a window."""
    await connection.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                             repeat_key)


async def count_repeat(connection: asyncpg.Connection, repeat_key: str) -> bool:
    """Add one to the open window of ``repeat_key``; False when none is open."""
    status = await connection.execute(
        "UPDATE auth.auth_event_repeats SET repeats = repeats + 1"
        " WHERE repeat_key = $1 AND window_ends_at > clock_timestamp()", repeat_key)
    return not status.endswith(" 0")


async def open_repeat_window(connection: asyncpg.Connection, event_id: int, repeat_key: str,
                             window_seconds: int) -> None:
    await connection.execute(
        "INSERT INTO auth.auth_event_repeats (event_id, repeat_key, window_ends_at)"
        " VALUES ($1, $2, clock_timestamp() + make_interval(secs => $3))",
        event_id, repeat_key, window_seconds)


async def delete_orphan_repeats(connection: asyncpg.Connection) -> int:
    """The counts whose records the retention purge removed."""
    status = await connection.execute(
        "DELETE FROM auth.auth_event_repeats r WHERE NOT EXISTS"
        " (SELECT 1 FROM auth.auth_events e WHERE e.id = r.event_id)")
    return int(status.split()[-1])


async def select_audit_page(connection: asyncpg.Connection, user_id: uuid.UUID, limit: int,
                            after: Position | None) -> list[AuditEntry]:
    """The user's records, newest first, ``limit + 1`` of them to tell whether more exist.

    Records about the user, and commands an administrator ran on the deployment as a
    whole (no user attached): in a single-user deployment those concern the owner too.
    """
    rows = await connection.fetch(
        "SELECT e.id, e.occurred_at, e.event AS action, e.outcome,"
        " COALESCE(e.actor, e.user_id::text, 'anonymous') AS actor, e.ip, e.request_id,"
        " e.detail, 1 + COALESCE(r.repeats, 0) AS count,"
        " CASE WHEN r.repeats > 0 THEN r.last_at END AS last_at"
        " FROM auth.auth_events e LEFT JOIN auth.auth_event_repeats r ON r.event_id = e.id"
        " WHERE (e.user_id = $1 OR (e.user_id IS NULL AND e.actor = 'admin'))"
        "   AND ($2::timestamptz IS NULL OR (e.occurred_at, e.id) < ($2, $3))"
        " ORDER BY e.occurred_at DESC, e.id DESC LIMIT $4",
        user_id, after.occurred_at if after else None, after.id if after else 0, limit + 1)
    return [AuditEntry.from_row(row) for row in rows]


async def now(connection: asyncpg.Connection) -> datetime:
    """The database's clock, so that every replica judges lockouts by the same time.

    ``clock_timestamp()`` rather than ``now()``: the latter is frozen at the start of a
    transaction that may have waited on a row lock.
    """
    return await connection.fetchval("SELECT clock_timestamp()")
