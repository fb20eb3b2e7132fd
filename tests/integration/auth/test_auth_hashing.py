"""bcrypt: the configured cost, a rehash when the cost rises, a bounded pool off the loop."""

from __future__ import annotations

import asyncio

import asyncpg
import bcrypt
import pytest

from services.auth.app import create_app
from services.auth.keys import HASHER
from services.auth.settings import load_settings
from tests.integration.auth.auth_helpers import GOOD_PASSWORD, AuthApi, user_codec


async def make_api(aiohttp_client, base_env: dict[str, str], internal_key: str,
                   **settings: str) -> AuthApi:
    loaded = load_settings({**base_env, **settings})
    return AuthApi(await aiohttp_client(create_app(loaded)), internal_key, user_codec(loaded))


async def stored_hash(db: asyncpg.Connection) -> str:
    return await db.fetchval("SELECT password_hash FROM auth.users")


async def test_a_stored_hash_is_rehashed_at_login_after_the_cost_rises(
        aiohttp_client, base_env: dict[str, str], internal_key: str,
        db: asyncpg.Connection) -> None:
    at_ten = await make_api(aiohttp_client, base_env, internal_key, Auth__BcryptCost="10")
    assert (await at_ten.register()).status == 201
    assert (await stored_hash(db)).startswith("$2b$10$")
    assert (await at_ten.login()).status == 200
    assert (await stored_hash(db)).startswith("$2b$10$")

    at_eleven = await make_api(aiohttp_client, base_env, internal_key, Auth__BcryptCost="11")
    assert (await at_eleven.login(password="wrong-password-here")).status == 401
    assert (await stored_hash(db)).startswith("$2b$10$")  # only a success rehashes
    assert (await at_eleven.login()).status == 200
    upgraded = await stored_hash(db)
    assert upgraded.startswith("$2b$11$")
    assert (await at_eleven.login()).status == 200
    assert await stored_hash(db) == upgraded  # no second rehash at the same cost

    event = await db.fetchval("SELECT detail->>'rehashed' FROM auth.auth_events"
                              " WHERE event = 'login' AND outcome = 'success'"
                              " ORDER BY id LIMIT 1 OFFSET 1")
    assert event == "true"


async def test_a_stored_hash_is_rehashed_at_login_after_the_cost_falls(
        aiohttp_client, base_env: dict[str, str], internal_key: str,
        db: asyncpg.Connection) -> None:
    # A hash left at the old cost would answer slower than the dummy unknown names get.
    at_eleven = await make_api(aiohttp_client, base_env, internal_key, Auth__BcryptCost="11")
    assert (await at_eleven.register()).status == 201
    assert (await stored_hash(db)).startswith("$2b$11$")

    at_ten = await make_api(aiohttp_client, base_env, internal_key, Auth__BcryptCost="10")
    assert (await at_ten.login(password="wrong-password-here")).status == 401
    assert (await stored_hash(db)).startswith("$2b$11$")  # only a success rehashes
    assert (await at_ten.login()).status == 200
    lowered = await stored_hash(db)
    assert lowered.startswith("$2b$10$")
    assert (await at_ten.login()).status == 200
    assert await stored_hash(db) == lowered


def checked_costs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The cost of every hash bcrypt checks a password against, as the library sees it."""
    seen: list[str] = []
    real = bcrypt.checkpw

    def checkpw(password: bytes, hashed: bytes) -> bool:
        seen.append(hashed[:7].decode())
        return real(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", checkpw)
    return seen


@pytest.mark.parametrize(("made_at", "configured"), [("11", "10"), ("10", "11")])
async def test_an_unknown_name_is_checked_at_the_cost_of_the_owner_hash(
        aiohttp_client, base_env: dict[str, str], internal_key: str, db: asyncpg.Connection,
        monkeypatch: pytest.MonkeyPatch, made_at: str, configured: str) -> None:
    before = await make_api(aiohttp_client, base_env, internal_key,
                            Auth__BcryptCost=made_at)
    assert (await before.register()).status == 201
    after = await make_api(aiohttp_client, base_env, internal_key,
                           Auth__BcryptCost=configured)
    seen = checked_costs(monkeypatch)
    assert (await after.login(password="wrong-password-here")).status == 401
    assert (await after.login(username="nobody-here")).status == 401
    assert (await after.login(username="nobody-here", password="x" * 80)).status == 401
    assert seen == [f"$2b${made_at}$"] * 3

    # Once the owner's hash follows the new cost, so does the dummy.
    assert (await after.login()).status == 200
    seen.clear()
    assert (await after.login(username="nobody-here")).status == 401
    assert seen == [f"$2b${configured}$"]


async def test_hashes_use_the_configured_cost(aiohttp_client, base_env: dict[str, str],
                                              internal_key: str,
                                              db: asyncpg.Connection) -> None:
    api = await make_api(aiohttp_client, base_env, internal_key, Auth__BcryptCost="11")
    assert (await api.register()).status == 201
    assert (await stored_hash(db)).startswith("$2b$11$")


async def test_the_event_loop_answers_health_while_twenty_logins_hash(
        aiohttp_client, base_env: dict[str, str], internal_key: str,
        db: asyncpg.Connection) -> None:
    # Cost 11, so that each login's bcrypt work is long next to a /health round trip.
    api = await make_api(aiohttp_client, base_env, internal_key, Auth__BcryptCost="11",
                         Auth__HashWorkers="2", Auth__HashQueueSize="64")
    assert (await api.register()).status == 201
    hasher = api.client.server.app[HASHER]
    finished: list[str] = []

    async def login(index: int) -> None:
        response = await api.login()
        assert response.status == 200
        finished.append(f"login-{index}")

    logins = [asyncio.create_task(login(i)) for i in range(20)]
    # "Just after the logins start": once the server is hashing for them (or, were the
    # hashing on the loop, once the first of them has come back).
    for _ in range(5000):
        if hasher.in_flight or finished:
            break
        await asyncio.sleep(0.001)
    health = await api.client.get("/health")
    assert health.status == 200
    finished.append("health")
    await asyncio.gather(*logins)

    assert finished[0] == "health", finished[:3]
    assert len(finished) == 21


async def test_too_many_waiting_hashes_is_503_with_retry_after(
        aiohttp_client, base_env: dict[str, str], internal_key: str,
        db: asyncpg.Connection) -> None:
    api = await make_api(aiohttp_client, base_env, internal_key, Auth__BcryptCost="12",
                         Auth__HashWorkers="1", Auth__HashQueueSize="1")
    assert (await api.register()).status == 201

    responses = await asyncio.gather(*(api.login() for _ in range(8)))

    statuses = [r.status for r in responses]
    assert 200 in statuses
    refused = [r for r in responses if r.status == 503]
    assert refused, statuses
    for response in refused:
        assert int(response.headers["Retry-After"]) >= 1
        assert (await response.json())["code"] == "hash_queue_full"
    assert set(statuses) <= {200, 503}
    # A busy server is not a failed login: nothing counts toward a lockout.
    assert await db.fetchval("SELECT count(*) FROM auth.login_failures") == 0
    assert (await api.login(password=GOOD_PASSWORD)).status == 200
