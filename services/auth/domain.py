"""Pure rules of the auth service: usernames, the password policy, the lockout decision.

Nothing here touches the network, the database or the clock: callers pass ``now`` and
limits in, so every rule is tested on its own.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from zxcvbn import zxcvbn

from shared.errors import ValidationError

MAX_USERNAME_LENGTH = 50
# bcrypt reads at most 72 bytes; a longer password would be silently cut, so that two
# passwords sharing their first 72 bytes would both open the account.
MAX_PASSWORD_BYTES = 72
MIN_PASSWORD_SCORE = 3


# ---------------------------------------------------------------------------- usernames

@dataclass(frozen=True, slots=True)
class Username:
    display: str
    # The form compared for uniqueness and lockout: "Alice", "alice" and "ＡＬＩＣＥ" are one.
    key: str


def normalize_username(raw: str) -> Username:
    """Trimmed and NFKC-normalised; 1-50 characters; no control or format characters."""
    display = unicodedata.normalize("NFKC", raw.strip()).strip()
    if not display:
        raise ValidationError("username", "Username must not be empty.",
                              code="invalid_username")
    if len(display) > MAX_USERNAME_LENGTH:
        raise ValidationError("username",
                              f"Username must be at most {MAX_USERNAME_LENGTH} characters.",
                              code="invalid_username")
    if any(unicodedata.category(char).startswith("C") for char in display):
        raise ValidationError("username",
                              "Username must not contain control or invisible characters.",
                              code="invalid_username")
    return Username(display=display, key=username_key(display))


def username_key(display: str) -> str:
    return unicodedata.normalize("NFKC", display.casefold())


# ------------------------------------------------------------------------------ passwords

def password_problem(password: str, *, min_length: int, username: str | None = None,
                     field: str = "password") -> ValidationError | None:
    """The first rule the password breaks, as an error naming that rule; None when it passes.

    The cheap rules run first so that the strength estimate only sees passwords of a
    bounded size.
    """
    if len(password) < min_length:
        return ValidationError(field, f"Password must be at least {min_length} characters.",
                               code="password_too_short")
    if len(password.encode("utf-8")) > MAX_PASSWORD_BYTES:
        return ValidationError(
            field, f"Password must be at most {MAX_PASSWORD_BYTES} bytes in UTF-8.",
            code="password_too_long")
    inputs = [username] if username else []
    result = zxcvbn(password, user_inputs=inputs)
    if result["score"] < MIN_PASSWORD_SCORE:
        feedback = result.get("feedback") or {}
        hint = feedback.get("warning") or ""
        message = "Password is too easy to guess."
        if hint:
            message += f" {hint}"
        return ValidationError(field, message, code="password_too_weak")
    return None


def check_password(password: str, *, min_length: int, username: str | None = None,
                   field: str = "password") -> None:
    problem = password_problem(password, min_length=min_length, username=username,
                               field=field)
    if problem is not None:
        raise problem


def fits_bcrypt(password: str) -> bool:
    return len(password.encode("utf-8")) <= MAX_PASSWORD_BYTES


def bcrypt_cost_of(password_hash: str) -> int | None:
    """The cost of a modular-crypt bcrypt hash (``$2b$12$...``), or None if unreadable."""
    parts = password_hash.split("$")
    if len(parts) < 4 or parts[1] not in {"2a", "2b", "2y"}:
        return None
    try:
        return int(parts[2])
    except ValueError:
        return None


def needs_rehash(password_hash: str, cost: int) -> bool:
    """A hash not at the configured cost is remade at the next login, down as well as up:
    a stored hash kept at an old cost would answer at another speed than the dummy that
    unknown usernames are checked against, and so tell them apart."""
    return bcrypt_cost_of(password_hash) != cost


def dummy_cost(stored_hashes: Iterable[str], configured: int) -> int:
    """The cost to check an unknown username at: that of the stored hashes.

    An unknown name must take as long as the owner's name with a wrong password, and the
    owner's hash keeps the cost it was made at until the next successful login. Tempo has
    one user, so this is that user's cost; were there several, the highest, since the
    owner's name is the one worth telling apart. With nothing stored (or nothing readable),
    the configured cost, which is what the first hash will be made at.
    """
    costs = [cost for cost in map(bcrypt_cost_of, stored_hashes) if cost is not None]
    return max(costs, default=configured)


# -------------------------------------------------------------------------------- lockout

@dataclass(frozen=True, slots=True)
class LockoutPolicy:
    threshold: int
    window: timedelta
    max_lock: timedelta

    def lock_duration(self, lockouts: int) -> timedelta:
        """The n-th lockout in a row lasts window * 2^(n-1), capped at ``max_lock``."""
        exponent = max(0, lockouts - 1)
        if exponent > 30:
            return self.max_lock
        return min(self.window * (2 ** exponent), self.max_lock)


@dataclass(frozen=True, slots=True)
class FailureRecord:
    """What is remembered about one username's failed logins."""

    failures: int = 0
    window_started_at: datetime | None = None
    locked_until: datetime | None = None
    lockouts: int = 0


@dataclass(frozen=True, slots=True)
class FailureOutcome:
    record: FailureRecord
    # True when this failure is the one that imposed a lock.
    locked_now: bool


def seconds_until(moment: datetime, now: datetime) -> int:
    return max(1, math.ceil((moment - now).total_seconds()))


def locked_for(record: FailureRecord | None, now: datetime) -> int | None:
    """Seconds until the username may try again, or None when it is not locked."""
    if record is None or record.locked_until is None or record.locked_until <= now:
        return None
    return seconds_until(record.locked_until, now)


def register_failure(record: FailureRecord | None, policy: LockoutPolicy,
                     now: datetime) -> FailureOutcome:
    """The record after one more failed login at ``now``.

    Failures count inside a window that opens at the first of them. Reaching the threshold
    locks the username and starts a fresh count; each further lockout doubles. The doubling
    is forgotten once a whole window has passed since the last lock ended without one.
    """
    record = record or FailureRecord()
    lockouts = record.lockouts
    if record.locked_until is not None and now >= record.locked_until + policy.window:
        lockouts = 0
    in_window = (record.window_started_at is not None
                 and now < record.window_started_at + policy.window)
    if in_window:
        failures, started = record.failures + 1, record.window_started_at
    else:
        failures, started = 1, now
    if failures >= policy.threshold:
        lockouts += 1
        locked = FailureRecord(failures=0, window_started_at=None,
                               locked_until=now + policy.lock_duration(lockouts),
                               lockouts=lockouts)
        return FailureOutcome(locked, locked_now=True)
    kept_lock = record.locked_until if lockouts else None
    return FailureOutcome(
        replace(record, failures=failures, window_started_at=started,
                locked_until=kept_lock, lockouts=lockouts),
        locked_now=False,
    )
