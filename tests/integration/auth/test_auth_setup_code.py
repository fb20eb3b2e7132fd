"""With ``Auth__SetupCode`` set, the first registration must present it: a visitor who
reaches a new deployment first cannot claim it. Without one, registration is as before."""

from __future__ import annotations

import asyncpg
import pytest

from services.auth.app import create_app
from services.auth.settings import load_settings
from tests.integration.auth.auth_helpers import GOOD_PASSWORD, USERNAME, AuthApi, user_codec

SETUP_CODE = "pale-orbit-lantern-9f3k2q"


@pytest.fixture
async def coded_api(aiohttp_client, auth_env: dict[str, str], internal_key: str,
                    db: asyncpg.Connection) -> AuthApi:
    settings = load_settings({**auth_env, "Auth__SetupCode": SETUP_CODE,
                              "Auth__LockoutThreshold": "3"})
    return AuthApi(await aiohttp_client(create_app(settings)), internal_key,
                   user_codec(settings))


async def register(api: AuthApi, code: str | None, *, client_ip: str = "203.0.113.7"):
    body = {"username": USERNAME, "password": GOOD_PASSWORD}
    if code is not None:
        body["setupCode"] = code
    return await api.request("POST", "/auth/register", json=body,
                             headers=api.headers(client_ip=client_ip))


async def users(db: asyncpg.Connection) -> int:
    return await db.fetchval("SELECT count(*) FROM auth.users")


async def test_registration_says_a_setup_code_is_required(coded_api: AuthApi) -> None:
    response = await coded_api.request("GET", "/auth/registration-available")
    assert await response.json() == {"registrationAvailable": True, "setupCodeRequired": True}
    assert (await register(coded_api, SETUP_CODE)).status == 201
    response = await coded_api.request("GET", "/auth/registration-available")
    assert await response.json() == {"registrationAvailable": False,
                                     "setupCodeRequired": False}


@pytest.mark.parametrize("code", [None, "", "wrong-code-entirely-1234",
                                  SETUP_CODE[:-1], SETUP_CODE + "x"])
async def test_register_without_the_right_setup_code_is_403_and_makes_no_user(
        coded_api: AuthApi, db: asyncpg.Connection, code: str | None) -> None:
    response = await register(coded_api, code)
    assert response.status == 403
    assert response.content_type == "application/problem+json"
    body = await response.json()
    assert body["code"] == "invalid_setup_code"
    assert SETUP_CODE not in await response.text()
    assert await users(db) == 0
    (row,) = await db.fetch("SELECT outcome, username, detail->>'reason' AS reason"
                            " FROM auth.auth_events WHERE event = 'register'")
    assert tuple(row.values()) == ("refused", USERNAME, "invalid_setup_code")


async def test_register_with_the_setup_code_is_201(coded_api: AuthApi,
                                                   db: asyncpg.Connection) -> None:
    assert (await register(coded_api, "not-the-code-at-all-000")).status == 403
    response = await register(coded_api, f"  {SETUP_CODE}\n")
    assert response.status == 201, await response.text()
    assert await users(db) == 1
    assert (await coded_api.login()).status == 200


async def test_the_setup_code_is_useless_once_the_user_exists(coded_api: AuthApi,
                                                              db: asyncpg.Connection) -> None:
    assert (await register(coded_api, SETUP_CODE)).status == 201
    response = await coded_api.request("POST", "/auth/register", json={
        "username": "second", "password": GOOD_PASSWORD, "setupCode": SETUP_CODE})
    assert response.status == 403
    assert (await response.json())["code"] == "registration_closed"
    assert await users(db) == 1


async def test_wrong_setup_codes_lock_the_client_out_like_logins(
        coded_api: AuthApi, db: asyncpg.Connection) -> None:
    for _ in range(3):
        assert (await register(coded_api, "guess-guess-guess-guess")).status == 403
    locked = await register(coded_api, SETUP_CODE)
    assert locked.status == 429
    assert int(locked.headers["Retry-After"]) >= 1
    assert await users(db) == 0
    # Strangers guessing elsewhere do not lock the owner out of registering.
    assert (await register(coded_api, SETUP_CODE, client_ip="198.51.100.20")).status == 201


async def test_without_a_configured_setup_code_registration_is_as_before(
        api: AuthApi, db: asyncpg.Connection) -> None:
    response = await api.request("GET", "/auth/registration-available")
    assert await response.json() == {"registrationAvailable": True,
                                     "setupCodeRequired": False}
    assert (await register(api, None)).status == 201
    assert await users(db) == 1


async def test_a_setup_code_sent_when_none_is_configured_is_ignored(
        api: AuthApi, db: asyncpg.Connection) -> None:
    assert (await register(api, "anything-at-all-here")).status == 201
    assert await users(db) == 1
