"""Login failures: one generic answer, per-username lockout in PostgreSQL, and its expiry."""

from __future__ import annotations

import asyncpg
import pytest
from prometheus_client import REGISTRY

from services.auth.app import create_app
from services.auth.settings import AuthSettings, load_settings
from tests.integration.auth.auth_helpers import GOOD_PASSWORD, AuthApi, user_codec
from tests.support import AUTH_COOKIE

WRONG = "definitely-not-it-99"


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def fail(api: AuthApi, times: int, username: str = "Runner") -> list[int]:
    return [(await api.login(username=username, password=WRONG)).status
            for _ in range(times)]


async def test_unknown_user_and_wrong_password_get_the_same_401(api: AuthApi) -> None:
    await api.register()
    wrong_password = await api.login(password=WRONG)
    unknown_user = await api.login(username="nobody-here", password=WRONG)
    assert wrong_password.status == unknown_user.status == 401
    first, second = await wrong_password.json(), await unknown_user.json()
    for body in (first, second):
        del body["requestId"]
    assert first == second
    assert first["code"] == "invalid_credentials"
    assert AUTH_COOKIE not in wrong_password.headers.get("Set-Cookie", "")


async def test_login_with_an_over_long_password_is_refused_not_truncated(
        api: AuthApi) -> None:
    seventy_two = "tangent-violet-harbor-42-" * 2 + "quartz-lantern-orbit-77"[:22]
    assert len(seventy_two.encode()) == 72
    assert (await api.register(password=seventy_two)).status == 201
    # bcrypt itself reads only 72 bytes: a check that cut the input would let this in.
    assert (await api.login(password=seventy_two + "anything")).status == 401
    assert (await api.login(password=seventy_two)).status == 200


async def test_lockout_after_five_failures_is_429_with_retry_after(
        api: AuthApi, db: asyncpg.Connection) -> None:
    await api.register()
    lockouts_before = counter("tempo_auth_lockouts_total")
    failures_before = counter("tempo_auth_login_failures_total", reason="invalid_credentials")

    assert await fail(api, 5) == [401] * 5
    response = await api.login()  # the right password, too late
    assert response.status == 429
    retry_after = int(response.headers["Retry-After"])
    assert 14 * 60 < retry_after <= 15 * 60
    problem = await response.json()
    assert problem["code"] == "locked_out"
    assert problem["retryAfter"] == retry_after

    assert counter("tempo_auth_lockouts_total") == lockouts_before + 1
    assert counter("tempo_auth_login_failures_total",
                   reason="invalid_credentials") == failures_before + 5
    events = await db.fetch("SELECT event, outcome FROM auth.auth_events"
                            " WHERE event IN ('lockout', 'login') ORDER BY id")
    assert [tuple(e) for e in events][-2:] == [("lockout", "success"), ("login", "refused")]


async def test_unknown_usernames_lock_out_the_same_way(api: AuthApi) -> None:
    await api.register()
    assert await fail(api, 5, username="ghost") == [401] * 5
    assert (await api.login(username="ghost", password=WRONG)).status == 429
    # Lockout is per username: the real user is untouched.
    assert (await api.login()).status == 200


async def test_lockout_key_ignores_case_and_width(api: AuthApi) -> None:
    await api.register()
    for name in ["runner", "RUNNER", "Ｒunner", " Runner ", "rUnNeR"]:
        assert (await api.login(username=name, password=WRONG)).status == 401
    assert (await api.login()).status == 429


async def test_a_success_clears_the_failure_count(api: AuthApi,
                                                  db: asyncpg.Connection) -> None:
    await api.register()
    assert await fail(api, 4) == [401] * 4
    assert (await api.login()).status == 200
    assert await db.fetchval("SELECT count(*) FROM auth.login_failures") == 0
    assert await fail(api, 4) == [401] * 4
    assert (await api.login()).status == 200


async def test_lockout_expires(api: AuthApi, db: asyncpg.Connection) -> None:
    await api.register()
    await fail(api, 5)
    assert (await api.login()).status == 429
    # Let the lock's time pass (the decision reads the database clock).
    await db.execute("UPDATE auth.login_failures"
                     " SET locked_until = clock_timestamp() - interval '1 second'")
    response = await api.login()
    assert response.status == 200


async def test_repeated_lockouts_back_off_exponentially(api: AuthApi,
                                                        db: asyncpg.Connection) -> None:
    await api.register()
    waits = []
    for _ in range(3):
        await fail(api, 5)
        response = await api.login()
        assert response.status == 429
        waits.append(int(response.headers["Retry-After"]))
        await db.execute("UPDATE auth.login_failures"
                         " SET locked_until = clock_timestamp() - interval '1 second'")
    assert waits[0] == pytest.approx(15 * 60, abs=5)
    assert waits[1] == pytest.approx(30 * 60, abs=5)
    assert waits[2] == pytest.approx(60 * 60, abs=5)


async def test_failures_outside_the_window_do_not_add_up(api: AuthApi,
                                                         db: asyncpg.Connection) -> None:
    await api.register()
    await fail(api, 4)
    await db.execute("UPDATE auth.login_failures"
                     " SET window_started_at = window_started_at - interval '16 minutes'")
    await fail(api, 4)
    assert (await api.login()).status == 200


async def test_lockout_holds_across_a_restart(aiohttp_client, api: AuthApi,
                                              auth_settings: AuthSettings) -> None:
    await api.register()
    await fail(api, 5)
    await api.client.close()
    restarted = AuthApi(await aiohttp_client(create_app(auth_settings)), api.internal_key,
                        api.user_tokens)
    assert (await restarted.login()).status == 429


async def test_lockout_limits_come_from_settings(aiohttp_client, base_env: dict[str, str],
                                                 internal_key: str,
                                                 db: asyncpg.Connection) -> None:
    settings = load_settings({**base_env, "Auth__BcryptCost": "10",
                              "Auth__LockoutThreshold": "2",
                              "Auth__LockoutWindowMinutes": "1"})
    api = AuthApi(await aiohttp_client(create_app(settings)), internal_key,
                  user_codec(settings))
    await api.register()
    assert await fail(api, 2) == [401, 401]
    response = await api.login()
    assert response.status == 429
    assert 50 < int(response.headers["Retry-After"]) <= 60


async def test_wrong_current_password_counts_toward_lockout(api: AuthApi) -> None:
    token = await api.registered_token()
    for _ in range(5):
        response = await api.request("POST", "/auth/password", token, json={
            "currentPassword": WRONG, "newPassword": "copper-meadow-quantum-77"})
        assert response.status == 400
    response = await api.request("POST", "/auth/password", token, json={
        "currentPassword": GOOD_PASSWORD, "newPassword": "copper-meadow-quantum-77"})
    assert response.status == 429
    assert (await api.login()).status == 429
