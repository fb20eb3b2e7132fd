"""A stranger's repeated failures stay one record per client and window, with a count: the
owner's trail stays readable and bounded under attack, and the counts only ever grow."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
import pytest

from services.auth.app import create_app
from services.auth.maintenance import purge
from services.auth.settings import load_settings
from shared.keys import DB_POOL
from tests.integration.auth.auth_helpers import AuthApi, user_codec

WRONG = "definitely-not-it-99"


@pytest.fixture
async def patient_api(aiohttp_client, auth_env: dict[str, str], internal_key: str,
                      db: asyncpg.Connection) -> AuthApi:
    """Fifty wrong passwords and no lockout yet, so that each one is a failure."""
    settings = load_settings({**auth_env, "Auth__LockoutThreshold": "100"})
    client = await aiohttp_client(create_app(settings))
    return AuthApi(client, internal_key, user_codec(settings))


async def fail(api: AuthApi, times: int, client_ip: str = "203.0.113.7") -> None:
    for _ in range(times):
        response = await api.login(password=WRONG, headers=api.headers(client_ip=client_ip))
        assert response.status == 401


async def failures(db: asyncpg.Connection) -> list[tuple[str, int]]:
    rows = await db.fetch(
        "SELECT e.ip, 1 + COALESCE(r.repeats, 0) AS count FROM auth.auth_events e"
        " LEFT JOIN auth.auth_event_repeats r ON r.event_id = e.id"
        " WHERE e.event = 'login' AND e.outcome = 'failure' ORDER BY e.id")
    return [(row["ip"], row["count"]) for row in rows]


async def owners_trail(api: AuthApi, token: str) -> list[dict]:
    response = await api.request("GET", "/auth/audit?limit=100", token)
    body = await response.json()
    assert response.status == 200, body
    return body["items"]


async def test_fifty_failures_from_one_client_in_one_window_are_one_record_of_fifty(
        patient_api: AuthApi, db: asyncpg.Connection) -> None:
    token = await patient_api.registered_token()
    await fail(patient_api, 50)
    assert await failures(db) == [("203.0.113.7", 50)]

    failed = [i for i in await owners_trail(patient_api, token) if i["outcome"] == "failure"]
    assert len(failed) == 1
    assert failed[0]["count"] == 50
    assert failed[0]["lastTime"] > failed[0]["time"]
    assert all(i["count"] == 1 and i["lastTime"] is None
               for i in await owners_trail(patient_api, token) if i["outcome"] != "failure")


async def test_failures_from_two_clients_are_two_records(
        patient_api: AuthApi, db: asyncpg.Connection) -> None:
    await patient_api.registered_token()
    await fail(patient_api, 3, "203.0.113.7")
    await fail(patient_api, 2, "198.51.100.9")
    await fail(patient_api, 1, "203.0.113.7")
    assert await failures(db) == [("203.0.113.7", 4), ("198.51.100.9", 2)]


async def test_a_new_window_opens_a_new_record(patient_api: AuthApi,
                                               db: asyncpg.Connection) -> None:
    await patient_api.registered_token()
    await fail(patient_api, 3)
    # As the window's end passing would: the operator's way round the guard, as in resets.
    async with db.transaction():
        await db.execute("SET LOCAL session_replication_role = replica")
        await db.execute("UPDATE auth.auth_event_repeats"
                         " SET window_ends_at = clock_timestamp() - interval '1 second'")
    await fail(patient_api, 2)
    assert await failures(db) == [("203.0.113.7", 3), ("203.0.113.7", 2)]


async def test_unknown_names_and_refusals_while_locked_out_are_counted_too(
        api: AuthApi, db: asyncpg.Connection) -> None:
    await api.registered_token()
    for _ in range(3):
        assert (await api.login(username="ghost", password=WRONG)).status == 401
        assert (await api.login(username="\x07", password=WRONG)).status == 401
    await fail(api, 5)  # the fifth locks the name
    for _ in range(4):
        assert (await api.login(password=WRONG)).status == 429
    rows = await db.fetch(
        "SELECT e.event, e.outcome, e.username, e.detail->>'reason' AS reason,"
        " 1 + COALESCE(r.repeats, 0) AS count FROM auth.auth_events e"
        " LEFT JOIN auth.auth_event_repeats r ON r.event_id = e.id"
        " WHERE e.event <> 'register' ORDER BY e.id")
    assert [tuple(row.values()) for row in rows if row["event"] != "login"
            or row["outcome"] != "success"] == [
        ("login", "failure", "ghost", "invalid_credentials", 3),
        ("login", "failure", None, "invalid_username", 3),
        ("login", "failure", "Runner", "invalid_credentials", 5),
        ("lockout", "success", "Runner", None, 1),
        ("login", "refused", "Runner", "locked_out", 4),
    ]


async def test_a_registration_refused_again_and_again_is_one_record(
        api: AuthApi, db: asyncpg.Connection) -> None:
    await api.registered_token()
    for _ in range(5):
        assert (await api.register(username="intruder")).status == 403
    rows = await db.fetch(
        "SELECT 1 + COALESCE(r.repeats, 0) AS count FROM auth.auth_events e"
        " LEFT JOIN auth.auth_event_repeats r ON r.event_id = e.id"
        " WHERE e.event = 'register' AND e.outcome = 'refused'")
    assert [row["count"] for row in rows] == [5]


@pytest.mark.parametrize("statement", [
    "UPDATE auth.auth_event_repeats SET repeats = 0",
    "UPDATE auth.auth_event_repeats SET repeats = repeats - 1",
    "UPDATE auth.auth_event_repeats SET window_ends_at = window_ends_at + interval '1 day'",
    "UPDATE auth.auth_event_repeats SET event_id = event_id + 1000, repeats = repeats + 1",
    "DELETE FROM auth.auth_event_repeats",
    "TRUNCATE auth.auth_event_repeats",
])
async def test_audit_repeat_counts_only_grow(api: AuthApi, db: asyncpg.Connection,
                                             statement: str) -> None:
    await api.registered_token()
    await fail(api, 3)
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="only counts up"):
        await db.execute(statement)
    assert await failures(db) == [("203.0.113.7", 3)]


async def test_a_count_needs_a_record_and_leaves_only_after_it(
        api: AuthApi, db: asyncpg.Connection) -> None:
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await db.execute("INSERT INTO auth.auth_event_repeats"
                         " (event_id, repeat_key, window_ends_at) VALUES (999, 'k', now())")
    await api.registered_token()
    await fail(api, 2)
    # The retention purge removes old records (here as an operator would, past the guard);
    # then, and only then, the upkeep may remove their counts.
    async with db.transaction():
        await db.execute("SET LOCAL session_replication_role = replica")
        await db.execute("DELETE FROM auth.auth_events WHERE outcome = 'failure'")
    assert await db.fetchval("SELECT count(*) FROM auth.auth_event_repeats") == 1
    _, _, removed = await purge(api.client.server.app[DB_POOL], timedelta(hours=1))
    assert removed == 1
    assert await db.fetchval("SELECT count(*) FROM auth.auth_event_repeats") == 0
