"""Secrets, service environments and URLs the tests build services from."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
ROOT = Path(__file__).resolve().parents[2]
# The sign-in cookie's name where it is Secure (production, the tests' default) and in
# plain-HTTP development, by the rule the services use.
AUTH_COOKIE = "__Host-authToken"
DEV_AUTH_COOKIE = "authToken"


def strong_secret() -> str:
    return secrets.token_urlsafe(48)


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, ""))


def with_password(url: str, password: str) -> str:
    """The URL with a password: PostgreSQL here trusts loopback, so it is only checked by
    the services' own settings validation, which demands a strong one in production."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{parts.username or 'postgres'}:{password}@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def with_user(url: str, user: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{user}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def service_env(database_url: str, *, jwt_key: str, internal_key: str,
                **extra: str) -> dict[str, str]:
    """A complete production environment for any service, pointed at the test database."""
    env = {
        "App__Environment": "production",
        "JWT__SecretKey": jwt_key,
        "Internal__SecretKey": internal_key,
        "Database__Url": with_password(database_url, strong_secret()),
        "Log__Level": "warning",
    }
    env.update(extra)
    return env


def internal_headers(internal_key: str, audience: str, *, user_id: str | None = None,
                     session_id: str | None = None, client_ip: str | None = "127.0.0.1",
                     user_agent: str | None = "pytest") -> dict[str, str]:
    """Headers the gateway would send: a fresh internal identity token for ``audience``."""
    from shared.config import KeySet, Secret
    from shared.identity import INTERNAL_TOKEN_HEADER, internal_codec, mint_internal_token

    codec = internal_codec(KeySet(Secret(internal_key)), audience)
    token = mint_internal_token(codec, audience=audience, user_id=user_id,
                                session_id=session_id, client_ip=client_ip,
                                user_agent=user_agent)
    return {INTERNAL_TOKEN_HEADER: token}
