"""The auth flows: register, log in, change or reset a password, end sessions.

Handlers and the admin command call these; they combine the pure rules (domain), the
password pool (hashing) and the queries (store), and write the audit trail. Each write
that belongs together happens in one transaction; a revocation is announced to the
gateway by the database when that transaction commits.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import structlog

from services.auth import audit, metrics, store
from services.auth.audit import Origin
from services.auth.domain import (
    LockoutPolicy,
    Username,
    check_password,
    dummy_cost,
    locked_for,
    needs_rehash,
    normalize_username,
    register_failure,
)
from services.auth.hashing import Hasher
from services.auth.settings import AuthSettings
from shared.errors import (
    ConflictError,
    NotFoundError,
    RateLimitedError,
    ServiceUnavailableError,
    UnauthorizedError,
    ValidationError,
)
from shared.identity import Identity
from shared.tokens import TokenCodec

log = structlog.get_logger("accounts")

INVALID_CREDENTIALS = "Invalid username or password."


class InvalidCredentialsError(UnauthorizedError):
    code = "invalid_credentials"
    message = INVALID_CREDENTIALS


@dataclass(frozen=True, slots=True)
class Issued:
    """A user's new session: the token for the cookie and what the client is told."""

    user: store.User
    session: store.Session
    token: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Services:
    """What the flows need from the running service."""

    pool: asyncpg.Pool
    hasher: Hasher
    settings: AuthSettings
    tokens: TokenCodec

    @property
    def lockout(self) -> LockoutPolicy:
        return LockoutPolicy(
            threshold=self.settings.lockout_threshold,
            window=timedelta(seconds=self.settings.lockout_window_seconds),
            max_lock=timedelta(seconds=self.settings.lockout_max_seconds),
        )


async def check_password_policy(settings: AuthSettings, password: str, *, username: str,
                                field: str) -> None:
    """The policy off the loop: the strength estimate can take tens of milliseconds."""
    await asyncio.to_thread(check_password, password, min_length=settings.password_min_length,
                            username=username, field=field)


# ---------------------------------------------------------------------------- register

def _recordable(raw_username: str) -> str | None:
    """The name as the audit trail may keep it: only a well-formed one (a NUL byte, say,
    cannot even be stored)."""
    try:
        return normalize_username(raw_username).display
    except ValidationError:
        return None


async def registration_available(services: Services) -> bool:
    async with services.pool.acquire() as connection:
        return not await store.registration_taken(connection)


async def register(services: Services, origin: Origin, raw_username: str, password: str,
                   confirm_password: str | None) -> store.User:
    async with services.pool.acquire() as connection:
        if await store.registration_taken(connection):
            await audit.record(connection, origin, audit.REGISTER, audit.REFUSED,
                               username=_recordable(raw_username),
                               reason="registration_closed")
            raise store.RegistrationClosedError()
    name = normalize_username(raw_username)
    if confirm_password is not None and confirm_password != password:
        raise ValidationError("confirmPassword", "Passwords do not match.",
                              code="password_mismatch")
    await check_password_policy(services.settings, password, username=name.display,
                                field="password")
    user_id = uuid.uuid4()
    try:
        async with services.pool.acquire() as connection, connection.transaction():
            # Claim the lock before hashing: concurrent registrations wait here and fail
            # cheaply instead of all queueing for bcrypt.
            await store.take_registration_lock(connection, user_id)
            password_hash = await services.hasher.hash(password)
            user = await store.insert_user(connection, user_id, name.display, name.key,
                                           password_hash)
            await audit.record(connection, origin, audit.REGISTER, audit.SUCCESS,
                               user_id=user.id, username=user.username)
    except store.RegistrationClosedError:
        async with services.pool.acquire() as connection:
            await audit.record(connection, origin, audit.REGISTER, audit.REFUSED,
                               username=name.display, reason="registration_closed")
        raise
    return user


# ------------------------------------------------------------------------------- login

async def _refuse_if_locked(services: Services, connection: asyncpg.Connection,
                            origin: Origin, event: str, name: Username,
                            user_id: uuid.UUID | None) -> None:
    now = await store.now(connection)
    wait = locked_for(await store.select_failures(connection, name.key), now)
    if wait is None:
        return
    metrics.LOGIN_FAILURES.labels(reason="locked_out").inc()
    await audit.record(connection, origin, event, audit.REFUSED, user_id=user_id,
                       username=name.display, reason="locked_out", retry_after=wait)
    raise RateLimitedError(wait, "Too many failed attempts. Try again later.",
                           code="locked_out")


async def _record_failure(services: Services, origin: Origin, event: str, name: Username,
                          user_id: uuid.UUID | None) -> None:
    """Count one failure for the username; lock it when the count reaches the threshold."""
    metrics.LOGIN_FAILURES.labels(reason="invalid_credentials").inc()
    async with services.pool.acquire() as connection, connection.transaction():
        await store.lock_failures(connection, name.key)
        record = await store.select_failures(connection, name.key, for_update=True)
        now = await store.now(connection)
        outcome = register_failure(record, services.lockout, now)
        await store.save_failures(connection, name.key, outcome.record)
        await audit.record(connection, origin, event, audit.FAILURE, user_id=user_id,
                           username=name.display, reason="invalid_credentials")
        if outcome.locked_now:
            assert outcome.record.locked_until is not None
            metrics.LOCKOUTS.inc()
            await audit.record(
                connection, origin, audit.LOCKOUT, audit.SUCCESS, user_id=user_id,
                username=name.display, lockouts=outcome.record.lockouts,
                locked_seconds=int((outcome.record.locked_until - now).total_seconds()))


async def _issue_session(services: Services, connection: asyncpg.Connection,
                         user: store.User, origin: Origin) -> Issued:
    token, claims = services.tokens.issue(str(user.id))
    expires_at = datetime.fromtimestamp(claims.expires_at, UTC)
    session = await store.insert_session(connection, user_id=user.id, jti=claims.token_id,
                                         expires_at=expires_at, ip=origin.ip,
                                         user_agent=origin.user_agent)
    return Issued(user=user, session=session, token=token, expires_at=expires_at)


async def login(services: Services, origin: Origin, raw_username: str,
                password: str) -> Issued:
    try:
        name: Username | None = normalize_username(raw_username)
    except ValidationError:
        # No such username can exist; it still costs the same work and the same answer.
        name = None
    user: store.User | None = None
    async with services.pool.acquire() as connection:
        if name is not None:
            user = await store.select_user_by_key(connection, name.key)
            await _refuse_if_locked(services, connection, origin, audit.LOGIN, name,
                                    user.id if user else None)
        reference = [user.password_hash] if user else \
            await store.select_password_hashes(connection)

    cost = dummy_cost(reference, services.hasher.cost)
    if not await services.hasher.verify(password, user.password_hash if user else None,
                                        dummy_cost=cost):
        if name is None:
            metrics.LOGIN_FAILURES.labels(reason="invalid_credentials").inc()
            async with services.pool.acquire() as connection:
                await audit.record(connection, origin, audit.LOGIN, audit.FAILURE,
                                   reason="invalid_username")
        else:
            await _record_failure(services, origin, audit.LOGIN, name,
                                  user.id if user else None)
        raise InvalidCredentialsError()
    assert user is not None
    assert name is not None

    new_hash = None
    if needs_rehash(user.password_hash, services.hasher.cost):
        try:
            new_hash = await services.hasher.hash(password)
        except ServiceUnavailableError:
            # The upgrade can wait for a quieter login; refusing this one would not help.
            log.info("rehash_deferred", user_id=str(user.id))

    async with services.pool.acquire() as connection:
        async with connection.transaction():
            # A lock imposed by attempts that raced with this one still holds.
            await store.lock_failures(connection, name.key)
            record = await store.select_failures(connection, name.key, for_update=True)
            wait = locked_for(record, await store.now(connection))
            if wait is None:
                await store.clear_failures(connection, name.key)
                if new_hash is not None:
                    await store.replace_password_hash(connection, user.id,
                                                      user.password_hash, new_hash,
                                                      new_password=False)
                await store.update_last_login(connection, user.id)
                issued = await _issue_session(services, connection, user, origin)
                await audit.record(connection, origin, audit.LOGIN, audit.SUCCESS,
                                   user_id=user.id, username=user.username,
                                   session_id=str(issued.session.id),
                                   rehashed=new_hash is not None)
        if wait is not None:
            await _refuse_if_locked(services, connection, origin, audit.LOGIN, name, user.id)
            raise RateLimitedError(wait, "Too many failed attempts. Try again later.",
                                   code="locked_out")
    metrics.LOGINS.inc()
    return issued


# ---------------------------------------------------------------------------- sessions

def _user_uuid(identity: Identity) -> uuid.UUID:
    try:
        return uuid.UUID(identity.user_id or "")
    except ValueError:
        raise UnauthorizedError() from None


async def current_session(services: Services, identity: Identity) -> store.Session:
    """The caller's live session; 401 when the token behind it is revoked or expired."""
    if identity.user_id is None or identity.session_id is None:
        raise UnauthorizedError()
    async with services.pool.acquire() as connection:
        session = await store.select_active_session(connection, _user_uuid(identity),
                                                    identity.session_id)
    if session is None:
        raise UnauthorizedError("The session has ended. Please log in again.",
                                code="session_ended")
    return session


async def current_user(services: Services, identity: Identity) -> store.User:
    session = await current_session(services, identity)
    async with services.pool.acquire() as connection:
        user = await store.select_user_by_id(connection, session.user_id)
    if user is None:
        raise UnauthorizedError()
    return user


async def list_sessions(services: Services, identity: Identity) -> list[store.Session]:
    session = await current_session(services, identity)
    async with services.pool.acquire() as connection:
        return await store.select_active_sessions(connection, session.user_id)


async def logout(services: Services, identity: Identity, origin: Origin) -> None:
    """End the caller's session. Calling it without one, or twice, is not an error."""
    if identity.user_id is None or identity.session_id is None:
        return
    user_id = _user_uuid(identity)
    async with services.pool.acquire() as connection, connection.transaction():
        revoked = await store.revoke_session_by_jti(connection, user_id,
                                                    identity.session_id, "logout")
        if revoked:
            await audit.record(connection, origin, audit.LOGOUT, audit.SUCCESS,
                               user_id=user_id)


async def revoke_session(services: Services, identity: Identity, origin: Origin,
                         session_id: uuid.UUID) -> store.Session:
    """Revoke one of the caller's sessions; returns it. Another user's is not found."""
    current = await current_session(services, identity)
    async with services.pool.acquire() as connection, connection.transaction():
        target = await store.select_session(connection, session_id, current.user_id)
        if target is None:
            raise NotFoundError("No such session.", code="session_not_found")
        revoked = await store.revoke_session_by_id(connection, current.user_id, session_id,
                                                   "revoked_by_user")
        if revoked:
            await audit.record(connection, origin, audit.SESSION_REVOKE, audit.SUCCESS,
                               user_id=current.user_id, session_id=str(session_id),
                               current=target.jti == current.jti)
    return target


# ---------------------------------------------------------------------------- passwords

async def change_password(services: Services, identity: Identity, origin: Origin,
                          current_password: str, new_password: str) -> Issued:
    """Change the password, end every session, and open a fresh one for the caller."""
    session = await current_session(services, identity)
    async with services.pool.acquire() as connection:
        user = await store.select_user_by_id(connection, session.user_id)
    if user is None:
        raise UnauthorizedError()
    name = normalize_username(user.username)
    async with services.pool.acquire() as connection:
        await _refuse_if_locked(services, connection, origin, audit.PASSWORD_CHANGE, name,
                                user.id)
    if not await services.hasher.verify(current_password, user.password_hash):
        await _record_failure(services, origin, audit.PASSWORD_CHANGE, name, user.id)
        raise ValidationError("currentPassword", "The current password is not correct.",
                              code="invalid_current_password")
    if new_password == current_password:
        raise ValidationError("newPassword", "The new password must differ from the current one.",
                              code="password_unchanged")
    await check_password_policy(services.settings, new_password, username=user.username,
                                field="newPassword")
    new_hash = await services.hasher.hash(new_password)
    async with services.pool.acquire() as connection, connection.transaction():
        if not await store.replace_password_hash(connection, user.id, user.password_hash,
                                                 new_hash, new_password=True):
            raise ConflictError("The password was changed meanwhile. Log in again.",
                                code="password_changed_meanwhile")
        revoked = await store.revoke_user_sessions(connection, user.id, "password_change")
        await store.clear_failures(connection, name.key)
        issued = await _issue_session(services, connection, user, origin)
        await audit.record(connection, origin, audit.PASSWORD_CHANGE, audit.SUCCESS,
                           user_id=user.id, username=user.username,
                           sessions_revoked=len(revoked))
    return issued


async def reset_password(services: Services, origin: Origin, raw_username: str,
                         new_password: str) -> int:
    """The administrator's way back in: set a new password and end every session.

    Returns how many sessions were revoked.
    """
    name = normalize_username(raw_username)
    async with services.pool.acquire() as connection:
        user = await store.select_user_by_key(connection, name.key)
    if user is None:
        raise NotFoundError(f"No user named {name.display!r}.", code="user_not_found")
    await check_password_policy(services.settings, new_password, username=user.username,
                                field="password")
    new_hash = await services.hasher.hash(new_password)
    async with services.pool.acquire() as connection, connection.transaction():
        await store.update_password_hash(connection, user.id, new_hash)
        revoked = await store.revoke_user_sessions(connection, user.id, "admin_reset")
        await store.clear_failures(connection, name.key)
        await audit.record(connection, origin, audit.ADMIN_RESET, audit.SUCCESS,
                           user_id=user.id, username=user.username,
                           sessions_revoked=len(revoked))
    return len(revoked)
