"""The registration lock is a database constraint: one user, ever, however many race."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from tests.integration.auth.auth_helpers import GOOD_PASSWORD, AuthApi


async def test_hundred_concurrent_registrations_create_exactly_one_user(
        api: AuthApi, db: asyncpg.Connection) -> None:
    async def attempt(index: int) -> tuple[int, dict]:
        response = await api.register(username=f"runner-{index:03d}")
        return response.status, await response.json()

    results = await asyncio.gather(*(attempt(i) for i in range(100)))

    statuses = sorted(status for status, _ in results)
    assert statuses == [201] + [403] * 99
    assert {body["code"] for status, body in results if status == 403} == {
        "registration_closed"}
    assert await db.fetchval("SELECT count(*) FROM auth.users") == 1
    assert await db.fetchval("SELECT count(*) FROM auth.registration_lock") == 1
    winner = next(body for status, body in results if status == 201)
    assert await db.fetchval("SELECT username FROM auth.users") == winner["username"]


async def test_concurrent_registrations_of_one_name_in_two_cases_create_one_user(
        api: AuthApi, db: asyncpg.Connection) -> None:
    responses = await asyncio.gather(*(api.register(username=name)
                                       for name in ["Runner", "runner", "RUNNER", "Ｒunner"]))
    assert sorted(r.status for r in responses) == [201, 403, 403, 403]
    assert await db.fetchval("SELECT count(*) FROM auth.users") == 1


async def test_the_schema_itself_refuses_a_second_user(api: AuthApi,
                                                       db: asyncpg.Connection) -> None:
    assert (await api.register()).status == 201
    with pytest.raises(asyncpg.UniqueViolationError):
        await db.execute(
            "INSERT INTO auth.users (id, username, username_key, password_hash)"
            " VALUES (gen_random_uuid(), 'intruder', 'intruder', $1)", GOOD_PASSWORD)
    with pytest.raises(asyncpg.UniqueViolationError):
        await db.execute("INSERT INTO auth.registration_lock (user_id)"
                         " SELECT id FROM auth.users")


async def test_the_registration_lock_cannot_be_released(api: AuthApi,
                                                        db: asyncpg.Connection) -> None:
    assert (await api.register()).status == 201
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await db.execute("DELETE FROM auth.registration_lock")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await db.execute("UPDATE auth.registration_lock SET registered_at = now()")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await db.execute("TRUNCATE auth.registration_lock")
    response = await api.request("GET", "/auth/registration-available")
    assert await response.json() == {"registrationAvailable": False,
                                     "setupCodeRequired": False}
