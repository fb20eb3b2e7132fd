"""Only the gateway's internal identity gets in: missing, expired, wrong-audience and
wrong-key tokens are refused with 401, before any handler runs."""

from __future__ import annotations

import time

import asyncpg
import jwt
import pytest

from shared.config import KeySet, Secret
from shared.identity import INTERNAL_TOKEN_HEADER, internal_codec, mint_internal_token
from tests.integration.auth.auth_helpers import AuthApi
from tests.support import strong_secret

PROTECTED = [
    ("GET", "/auth/registration-available"),
    ("POST", "/auth/register"),
    ("POST", "/auth/login"),
    ("POST", "/auth/logout"),
    ("GET", "/auth/me"),
    ("POST", "/auth/password"),
    ("GET", "/auth/sessions"),
    ("DELETE", "/auth/sessions/00000000-0000-0000-0000-000000000000"),
    ("GET", "/ready"),
]


def token(key: str, audience: str = "auth", *, now: float | None = None) -> str:
    codec = internal_codec(KeySet(Secret(key)), audience)
    return mint_internal_token(codec, audience=audience, user_id=None, session_id=None,
                               client_ip="198.51.100.1", user_agent="x", now=now)


async def assert_refused(api: AuthApi, db: asyncpg.Connection, headers: dict[str, str],
                         method: str = "POST", path: str = "/auth/register") -> None:
    response = await api.client.request(method, path, headers=headers,
                                        json={"username": "Runner",
                                              "password": "violet-harbor-tangent-42"})
    assert response.status == 401
    problem = await response.json()
    assert problem["code"] == "unauthorized"
    assert response.content_type == "application/problem+json"
    # Refused before the handler: nothing was written.
    assert await db.fetchval("SELECT count(*) FROM auth.users") == 0
    assert await db.fetchval("SELECT count(*) FROM auth.auth_events") == 0


@pytest.mark.parametrize(("method", "path"), PROTECTED)
async def test_missing_internal_token_is_401(api: AuthApi, db: asyncpg.Connection,
                                             method: str, path: str) -> None:
    await assert_refused(api, db, {}, method, path)


async def test_expired_internal_token_is_401(api: AuthApi, db: asyncpg.Connection) -> None:
    stale = token(api.internal_key, now=time.time() - 61)
    await assert_refused(api, db, {INTERNAL_TOKEN_HEADER: stale})


async def test_internal_token_for_another_service_is_401(api: AuthApi,
                                                         db: asyncpg.Connection) -> None:
    await assert_refused(api, db, {INTERNAL_TOKEN_HEADER: token(api.internal_key, "media")})


async def test_internal_token_signed_with_another_key_is_401(api: AuthApi,
                                                             db: asyncpg.Connection) -> None:
    await assert_refused(api, db, {INTERNAL_TOKEN_HEADER: token(strong_secret())})


async def test_a_user_token_is_not_an_internal_token(api: AuthApi,
                                                     db: asyncpg.Connection) -> None:
    user_token, _ = api.user_tokens.issue("00000000-0000-0000-0000-000000000000")
    await assert_refused(api, db, {INTERNAL_TOKEN_HEADER: user_token})


async def test_unsigned_internal_token_is_401(api: AuthApi, db: asyncpg.Connection) -> None:
    now = int(time.time())
    unsigned = jwt.encode({"iss": "tempo-gateway", "aud": "auth", "sub": "anonymous",
                           "jti": "x", "iat": now, "exp": now + 60}, key=None,
                          algorithm="none")
    await assert_refused(api, db, {INTERNAL_TOKEN_HEADER: unsigned})


async def test_garbage_internal_token_is_401(api: AuthApi, db: asyncpg.Connection) -> None:
    await assert_refused(api, db, {INTERNAL_TOKEN_HEADER: "not.a.token"})


async def test_health_needs_no_identity(api: AuthApi) -> None:
    response = await api.client.get("/health")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}


async def test_a_valid_internal_token_gets_in(api: AuthApi) -> None:
    response = await api.client.get("/auth/registration-available",
                                    headers={INTERNAL_TOKEN_HEADER: token(api.internal_key)})
    assert response.status == 200


async def test_request_id_from_the_gateway_is_kept_and_others_replaced(
        api: AuthApi, db: asyncpg.Connection) -> None:
    wanted = "gateway-request-0001"
    response = await api.request("GET", "/auth/registration-available",
                                 headers={"X-Request-ID": wanted})
    assert response.headers["X-Request-ID"] == wanted
    response = await api.client.get("/auth/registration-available",
                                    headers={"X-Request-ID": wanted})
    assert response.status == 401
    assert response.headers["X-Request-ID"] != wanted
