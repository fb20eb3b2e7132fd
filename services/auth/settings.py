"""The auth service's settings: the shared ones plus its own ``Auth__*`` keys."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from shared.audit import DEFAULT_RETENTION_DAYS, retention_days
from shared.config import (
    SETUP_CODE,
    CommonSettings,
    Env,
    JwtSettings,
    Secret,
    SettingsError,
    load_common,
    load_jwt,
)
from shared.cookies import auth_cookie_name, load_cookie_secure

SERVICE = "auth"
DEFAULT_PORT = 8081

# bcrypt below 10 is too cheap to slow an offline attack on a stolen hash; above 16 a
# single login takes seconds on ordinary hardware and becomes a denial of service.
MIN_BCRYPT_COST = 10
MAX_BCRYPT_COST = 16
# No configuration may weaken the password rule below this.
MIN_PASSWORD_LENGTH_FLOOR = 8
# A setup code shorter than this could be guessed within the registration rate limits
# before the owner registers; deploy.generate_secrets makes 32 characters.
MIN_SETUP_CODE_LENGTH = 16


@dataclass(frozen=True, slots=True)
class AuthSettings:
    common: CommonSettings
    jwt: JwtSettings
    bcrypt_cost: int
    password_min_length: int
    lockout_threshold: int
    lockout_window_seconds: int
    lockout_max_seconds: int
    hash_workers: int
    hash_queue_size: int
    cookie_secure: bool
    purge_interval_seconds: int
    audit_retention_days: int = DEFAULT_RETENTION_DAYS
    # Repeats of one failure from one client within this long share one audit record.
    audit_repeat_window_seconds: int = 3600
    # When set, the first registration must present it: the first visitor to reach a new
    # deployment could otherwise claim it.
    setup_code: Secret | None = None

    @property
    def cookie_name(self) -> str:
        return auth_cookie_name(self.cookie_secure)

    @property
    def token_lifetime_seconds(self) -> int:
        return self.jwt.expiration_days * 86400


def _default_hash_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def load_settings(environ: Mapping[str, str] | None = None) -> AuthSettings:
    """Every problem in the environment is collected, then raised at once."""
    env = Env(environ)
    common = load_common(env, SERVICE, DEFAULT_PORT)
    jwt = load_jwt(env, common)

    cookie_secure = load_cookie_secure(env, common.environment)

    window_minutes = env.int("Auth__LockoutWindowMinutes", 15, minimum=1, maximum=1440)
    max_minutes = env.int("Auth__LockoutMaxMinutes", 1440, minimum=1, maximum=10080)
    if max_minutes < window_minutes:
        env.problem("Auth__LockoutMaxMinutes",
                    "must be at least Auth__LockoutWindowMinutes")

    setup_code = env.secret(SETUP_CODE)
    if setup_code is not None and len(setup_code) < MIN_SETUP_CODE_LENGTH:
        env.problem(SETUP_CODE,
                    f"must be at least {MIN_SETUP_CODE_LENGTH} characters")

    settings = AuthSettings(
        common=common,
        jwt=jwt,
        bcrypt_cost=env.int("Auth__BcryptCost", 12, minimum=MIN_BCRYPT_COST,
                            maximum=MAX_BCRYPT_COST),
        password_min_length=env.int("Auth__PasswordMinLength", 12,
                                    minimum=MIN_PASSWORD_LENGTH_FLOOR, maximum=64),
        lockout_threshold=env.int("Auth__LockoutThreshold", 5, minimum=1, maximum=100),
        lockout_window_seconds=window_minutes * 60,
        lockout_max_seconds=max_minutes * 60,
        hash_workers=env.int("Auth__HashWorkers", _default_hash_workers(), minimum=1,
                             maximum=64),
        hash_queue_size=env.int("Auth__HashQueueSize", 32, minimum=0, maximum=10000),
        cookie_secure=cookie_secure,
        purge_interval_seconds=env.int("Auth__SessionPurgeIntervalSeconds", 3600,
                                       minimum=1, maximum=86400),
        audit_retention_days=retention_days(env),
        audit_repeat_window_seconds=env.int("Auth__AuditRepeatWindowMinutes", 60, minimum=1,
                                            maximum=1440) * 60,
        setup_code=setup_code,
    )
    if env.problems:
        raise SettingsError(env.problems)
    return settings
