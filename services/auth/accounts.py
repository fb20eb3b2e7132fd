"""The auth flows: register, log in, change or reset a password, end sessions.

Handlers and the admin command call these; they combine the pure rules (domain), the
password pool (hashing) and the queries (store), and write the audit trail. Each write
that belongs together happens in one transaction; a revocation is announced to the
gateway by the database when that transaction commits.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import structlog

from services.auth import audit, metrics, store, throttle
from services.auth.audit import Origin
from services.auth.domain import (
    LockoutPolicy,
    Username,
    check_password,
    dummy_cost,
    locked_for,
    needs_rehash,
    normalize_username,
)
from services.auth.hashing import Hasher
from services.auth.settings import AuthSettings
from shared.errors import (
    ConflictError,
    ForbiddenError,
    NotFoundError,
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


async def registration_available(services: Services) -> tuple[bool, bool]:
    """Whether registration is open, and whether it asks for the setup code."""
    async with services.pool.acquire() as connection:
        available = not await store.registration_taken(connection)
    return available, available and services.settings.setup_code is not None


class SetupCodeError(ForbiddenError):
    code = "invalid_setup_code"
    message = "Registration needs the setup code this server was deployed with."


def _setup_code_attempt(origin: Origin, username: str | None) -> throttle.Attempt:
    # Counted per client, so that strangers cannot lock the owner out of registering. No
    # username key starts with a space, so this never meets a user's count.
    return throttle.Attempt(event=audit.REGISTER, key=f" setup-code {origin.ip or ''}",
                            username=username)


async def _refuse_closed(services: Services, connection: asyncpg.Connection, origin: Origin,
                         username: str | None) -> None:
    await audit.record_repeated(connection, origin, audit.REGISTER, audit.REFUSED,
                                window_seconds=services.settings.audit_repeat_window_seconds,
                                reason="registration_closed", username=username)


async def _check_setup_code(services: Services, origin: Origin, presented: str | None,
                            username: str | None) -> None:
    """Nothing to do unless a code is configured; then it must be presented, and a client
    that keeps guessing is locked out like a username at login."""
    expected = services.settings.setup_code
    if expected is None:
        return
    attempt = _setup_code_attempt(origin, username)
    async with services.pool.acquire() as connection:
        await throttle.refuse_if_locked(services, connection, origin, attempt)
    # Compared as bytes of the same digest length, so the time taken says nothing of how
    # much of the code matched, nor of its length.
    given = hashlib.sha256((presented or "").strip().encode("utf-8")).digest()
    if presented and hmac.compare_digest(
            given, hashlib.sha256(expected.reveal().encode("utf-8")).digest()):
        return
    await throttle.record_failure(services, origin, attempt, outcome=audit.REFUSED,
                                  reason="invalid_setup_code")
    raise SetupCodeError()


async def register(services: Services, origin: Origin, raw_username: str, password: str,
                   confirm_password: str | None, setup_code: str | None = None) -> store.User:
    async with services.pool.acquire() as connection:
        if await store.registration_taken(connection):
            await _refuse_closed(services, connection, origin, _recordable(raw_username))
            raise store.RegistrationClosedError()
    await _check_setup_code(services, origin, setup_code, _recordable(raw_username))
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
            if services.settings.setup_code is not None:
                await store.clear_failures(connection, _setup_code_attempt(origin, None).key)
            await audit.record(connection, origin, audit.REGISTER, audit.SUCCESS,
                               user_id=user.id, username=user.username)
    except store.RegistrationClosedError:
        async with services.pool.acquire() as connection:
            await _refuse_closed(services, connection, origin, name.display)
        raise
    return user


# ------------------------------------------------------------------------------- login

async def _issue_session(services: Services, connection: asyncpg.Connection,
                         user: store.User, origin: Origin) -> Issued:
    token, claims = services.tokens.issue(str(user.id))
    expires_at = datetime.fromtimestamp(claims.expires_at, UTC)
    session = await store.insert_session(connection, user_id=user.id, jti=claims.token_id,
                                         expires_at=expires_at, ip=origin.ip,
                                         user_agent=origin.user_agent)
    return Issued(user=user, session=session, token=token, expires_at=expires_at)


def _login_attempt(name: Username, user: store.User | None,
                   event: str = audit.LOGIN) -> throttle.Attempt:
    return throttle.Attempt(event=event, key=name.key, user_id=user.id if user else None,
                            username=name.display)


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
            await throttle.refuse_if_locked(services, connection, origin,
                                            _login_attempt(name, user))
        # Read whether or not the name exists, so neither path does less work.
        stored = await store.select_password_hashes(connection)

    cost = dummy_cost(stored, services.hasher.cost)
    if not await services.hasher.verify(password, user.password_hash if user else None,
                                        dummy_cost=cost):
        metrics.LOGIN_FAILURES.labels(reason="invalid_credentials").inc()
        if name is None:
            async with services.pool.acquire() as connection:
                await audit.record_repeated(
                    connection, origin, audit.LOGIN, audit.FAILURE, reason="invalid_username",
                    window_seconds=services.settings.audit_repeat_window_seconds)
        else:
            await throttle.record_failure(services, origin, _login_attempt(name, user),
                                          reason="invalid_credentials")
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
            await throttle.refuse_if_locked(services, connection, origin,
                                            _login_attempt(name, user))
            raise throttle.locked_error(wait)
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
    attempt = _login_attempt(name, user, audit.PASSWORD_CHANGE)
    async with services.pool.acquire() as connection:
        await throttle.refuse_if_locked(services, connection, origin, attempt)
    if not await services.hasher.verify(current_password, user.password_hash):
        metrics.LOGIN_FAILURES.labels(reason="invalid_credentials").inc()
        await throttle.record_failure(services, origin, attempt, reason="invalid_credentials")
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
