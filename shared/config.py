"""Settings from the environment, in Tempo's ``Section__Key`` form.

Loading never stops at the first problem: every reader records what is wrong in
``Env.problems`` and returns a harmless stand-in, so that a service can print every
problem at once and exit. Messages name the variable, never its value.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

# Tempo ships this placeholder in its sample configuration; a deployment that kept it
# would sign tokens anyone can forge.
TEMPO_PLACEHOLDER_SECRET = "CHANGE_THIS_IN_PRODUCTION_USE_ENVIRONMENT_VARIABLE"  # noqa: S105
MIN_SECRET_LENGTH = 32
MIN_SECRET_DISTINCT_CHARS = 10
MIN_DB_PASSWORD_LENGTH = 16
WEAK_DB_PASSWORDS = frozenset({"postgres", "password"})

PRODUCTION = "production"
DEVELOPMENT = "development"

JWT_KEY = "JWT__SecretKey"
JWT_PREVIOUS_KEYS = "JWT__PreviousSecretKeys"
INTERNAL_KEY = "Internal__SecretKey"
INTERNAL_PREVIOUS_KEYS = "Internal__PreviousSecretKeys"
DATABASE_PASSWORD = "Database__Password"  # noqa: S105 - a setting name
SETUP_CODE = "Auth__SetupCode"

# The secret settings each service reads; it reads no other. A signing key goes only where
# it signs or verifies, and the previous keys kept during a rotation only where tokens are
# verified: users' tokens are signed by auth and verified by the gateway, identity tokens
# are signed by the gateway and verified by auth and media. The deployment (compose, the
# local stack, rotation) mounts and restarts by this table.
SERVICE_SECRETS: dict[str, tuple[str, ...]] = {
    "auth": (JWT_KEY, INTERNAL_KEY, INTERNAL_PREVIOUS_KEYS, DATABASE_PASSWORD, SETUP_CODE),
    "media": (INTERNAL_KEY, INTERNAL_PREVIOUS_KEYS, DATABASE_PASSWORD),
    "gateway": (JWT_KEY, JWT_PREVIOUS_KEYS, INTERNAL_KEY, DATABASE_PASSWORD),
}


class Secret:
    """A value that never shows itself in a repr, a log line or a traceback."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __len__(self) -> int:
        return len(self._value)


class SettingsError(Exception):
    """Raised once, after every problem in the environment has been collected."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class Env:
    """Typed reads from an environment mapping that collect problems instead of raising."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = dict(os.environ if environ is None else environ)
        self.problems: list[str] = []

    def problem(self, name: str, message: str) -> None:
        self.problems.append(f"{name}: {message}")

    def raw(self, name: str) -> str | None:
        value = self._environ.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def str(self, name: str, default: str | None = None) -> str | None:
        value = self.raw(name)
        return default if value is None else value

    def required_str(self, name: str) -> str:
        value = self.raw(name)
        if value is None:
            self.problem(name, "is required")
            return ""
        return value

    def int(self, name: str, default: int, *, minimum: int | None = None,
            maximum: int | None = None) -> int:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            self.problem(name, "must be a whole number")
            return default
        if minimum is not None and number < minimum:
            self.problem(name, f"must be at least {minimum}")
            return default
        if maximum is not None and number > maximum:
            self.problem(name, f"must be at most {maximum}")
            return default
        return number

    def float(self, name: str, default: float, *, minimum: float | None = None) -> float:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            self.problem(name, "must be a number")
            return default
        if minimum is not None and number < minimum:
            self.problem(name, f"must be at least {minimum}")
            return default
        return number

    def bool(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        self.problem(name, "must be true or false")
        return default

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.raw(name)
        if value is None:
            return default
        if value.lower() not in choices:
            self.problem(name, f"must be one of: {', '.join(choices)}")
            return default
        return value.lower()

    def list(self, name: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        value = self.raw(name)
        if value is None:
            return default
        return tuple(item.strip() for item in value.split(",") if item.strip())

    def secret(self, name: str) -> Secret | None:
        """A secret from ``NAME`` or from the file named by ``NAME_FILE`` (not both)."""
        direct = self._environ.get(name)
        file_name = self._environ.get(f"{name}_FILE")
        if direct and file_name:
            self.problem(name, f"set either {name} or {name}_FILE, not both")
            return None
        if file_name:
            try:
                content = Path(file_name).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                self.problem(f"{name}_FILE", "names a file that cannot be read")
                return None
            # Files written by editors and `echo` end in a newline that is not the secret.
            content = content.rstrip("\r\n")
            return Secret(content) if content else None
        return Secret(direct) if direct else None

    def secret_list(self, name: str) -> tuple[Secret, ...]:
        """Several secrets, comma- or newline-separated, from ``NAME`` or ``NAME_FILE``."""
        combined = self.secret(name)
        if combined is None:
            return ()
        parts = combined.reveal().replace("\n", ",").split(",")
        return tuple(Secret(part.strip()) for part in parts if part.strip())

    def url(self, name: str, default: str, *, schemes: tuple[str, ...] = ("http", "https")) -> str:
        value = self.str(name, default) or default
        parts = urlsplit(value)
        if parts.scheme not in schemes or not parts.hostname:
            self.problem(name, f"must be a URL with scheme {' or '.join(schemes)} and a host")
            return default
        return value.rstrip("/")

    def networks(self, name: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        result = []
        for item in self.list(name):
            try:
                result.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                self.problem(name, "holds an entry that is not a CIDR network")
        return tuple(result)


def signing_secret_problems(name: str, secret: Secret | None) -> list[str]:
    """Why a signing key is unfit, as a list of messages (empty when it is fine)."""
    if secret is None:
        return [f"{name}: is required (generate one with: openssl rand -base64 32)"]
    value = secret.reveal()
    if value == TEMPO_PLACEHOLDER_SECRET:
        return [f"{name}: is the placeholder from the sample configuration; set a real key"]
    if len(value) < MIN_SECRET_LENGTH:
        return [f"{name}: must be at least {MIN_SECRET_LENGTH} characters"]
    if len(set(value)) < MIN_SECRET_DISTINCT_CHARS:
        return [f"{name}: is trivially weak (too few distinct characters)"]
    return []


def database_password_problems(name: str, url: Secret) -> list[str]:
    password = urlsplit(url.reveal()).password or ""
    if password.lower() in WEAK_DB_PASSWORDS or password == "":
        return [f"{name}: the database password must be set and not a default one"]
    if len(password) < MIN_DB_PASSWORD_LENGTH:
        return [f"{name}: the database password must be at least "
                f"{MIN_DB_PASSWORD_LENGTH} characters"]
    return []


def with_password(url: str, password: str) -> str:
    """The database URL with its password replaced (for a password kept in its own file)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port:
        host += f":{parts.port}"
    user = quote(parts.username or "", safe="")
    netloc = f"{user}:{quote(password, safe='')}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@dataclass(frozen=True, slots=True)
class KeySet:
    """The key new tokens are signed with, and older keys still accepted until they expire."""

    current: Secret
    previous: tuple[Secret, ...] = ()


@dataclass(frozen=True, slots=True)
class JwtSettings:
    keys: KeySet
    issuer: str
    audience: str
    expiration_days: int


@dataclass(frozen=True, slots=True)
class CommonSettings:
    service: str
    environment: str
    host: str
    port: int
    database_url: Secret
    # Only the current key where identity tokens are signed, not verified (the gateway).
    internal_keys: KeySet
    log_level: str
    metrics_host: str
    metrics_port: int | None

    @property
    def development(self) -> bool:
        return self.environment == DEVELOPMENT


def _key_set(env: Env, name: str, previous_name: str | None) -> KeySet:
    current = env.secret(name)
    env.problems.extend(signing_secret_problems(name, current))
    previous = env.secret_list(previous_name) if previous_name else ()
    for index, key in enumerate(previous):
        env.problems.extend(signing_secret_problems(f"{previous_name}[{index}]", key))
    return KeySet(current or Secret(""), previous)


def _held(service: str, name: str) -> bool:
    return name in SERVICE_SECRETS[service]


def load_common(env: Env, service: str, default_port: int) -> CommonSettings:
    """The settings every service shares. Problems accumulate in ``env.problems``."""
    environment = env.choice("App__Environment", PRODUCTION, (PRODUCTION, DEVELOPMENT))
    internal_keys = _key_set(env, INTERNAL_KEY, INTERNAL_PREVIOUS_KEYS
                             if _held(service, INTERNAL_PREVIOUS_KEYS) else None)

    database_url = env.secret("Database__Url")
    if database_url is None:
        env.problem("Database__Url", "is required (postgresql://user:password@host:port/db)")
        database_url = Secret("")
    elif urlsplit(database_url.reveal()).scheme not in {"postgres", "postgresql"}:
        env.problem("Database__Url", "must be a postgresql:// URL")
    else:
        password = env.secret(DATABASE_PASSWORD)
        if password is not None:
            database_url = Secret(with_password(database_url.reveal(), password.reveal()))
        if environment == PRODUCTION:
            env.problems.extend(database_password_problems("Database__Url", database_url))

    metrics_port = env.int("Metrics__Port", 0, minimum=0, maximum=65535)
    return CommonSettings(
        service=service,
        environment=environment,
        host=env.str("Server__Host", "127.0.0.1") or "127.0.0.1",
        port=env.int("Server__Port", default_port, minimum=1, maximum=65535),
        database_url=database_url,
        internal_keys=internal_keys,
        log_level=env.choice("Log__Level", "info", ("debug", "info", "warning", "error")),
        metrics_host=env.str("Metrics__Host", "127.0.0.1") or "127.0.0.1",
        metrics_port=metrics_port or None,
    )


def load_jwt(env: Env, common: CommonSettings) -> JwtSettings:
    """The users' token settings, for the services that sign or verify those tokens."""
    keys = _key_set(env, JWT_KEY, JWT_PREVIOUS_KEYS
                    if _held(common.service, JWT_PREVIOUS_KEYS) else None)
    internal = common.internal_keys
    all_jwt = {k.reveal() for k in (keys.current, *keys.previous) if k}
    all_internal = {k.reveal() for k in (internal.current, *internal.previous) if k}
    if all_jwt & all_internal:
        env.problem(INTERNAL_KEY, "must differ from every JWT key")
    return JwtSettings(
        keys=keys,
        issuer=env.str("JWT__Issuer", "Tempo") or "Tempo",
        audience=env.str("JWT__Audience", "Tempo") or "Tempo",
        expiration_days=env.int("JWT__ExpirationDays", 7, minimum=1, maximum=365),
    )
