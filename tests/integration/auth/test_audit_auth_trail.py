"""The auth side of the audit trail beyond logins: a revoked session and an admin reset
each leave exactly one record with the actor, and ``GET /auth/audit`` pages them."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg
import pytest

from shared.audit import Position, encode_position
from tests.integration.auth.auth_helpers import OTHER_GOOD_PASSWORD, AuthApi
from tests.integration.auth.test_auth_admin_reset import reset


async def trail(api: AuthApi, token: str, limit: int = 100) -> list[dict]:
    items, cursor = [], None
    while True:
        query = f"/auth/audit?limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        response = await api.request("GET", query, token)
        body = await response.json()
        assert response.status == 200, body
        items += body["items"]
        if not body["more"]:
            return items
        cursor = body["items"][-1]["cursor"]


async def test_revoking_a_session_records_one_event_with_actor_ip_and_request_id(
        api: AuthApi, db: asyncpg.Connection) -> None:
    token = await api.registered_token()
    other = await api.login_token()
    sessions = await (await api.request("GET", "/auth/sessions", token)).json()
    target = next(s["id"] for s in sessions["sessions"] if not s["current"])
    response = await api.request("DELETE", f"/auth/sessions/{target}", token,
                                 headers={"X-Request-ID": "revoke-request-1"})
    assert response.status in {200, 204}
    rows = await db.fetch("SELECT * FROM auth.auth_events WHERE event = 'session_revoke'")
    assert len(rows) == 1
    user_id = api.claims(token).subject
    assert rows[0]["actor"] == user_id
    assert rows[0]["ip"] == "203.0.113.7"
    assert rows[0]["outcome"] == "success"
    assert (await api.request("GET", "/auth/me", other)).status == 401
    (item,) = [i for i in await trail(api, token) if i["action"] == "session_revoke"]
    assert item["actor"] == user_id
    assert item["clientIp"] == "203.0.113.7"


async def test_admin_reset_is_recorded_with_the_admin_as_actor(
        api: AuthApi, db: asyncpg.Connection, auth_env: dict[str, str]) -> None:
    await api.registered_token()
    code, _, err = await reset(auth_env, "runner", OTHER_GOOD_PASSWORD + "\n")
    assert code == 0, err
    (row,) = await db.fetch("SELECT * FROM auth.auth_events"
                            " WHERE event = 'admin_password_reset'")
    assert row["actor"] == "admin"
    assert row["user_id"] is not None
    token = await api.login_token(password=OTHER_GOOD_PASSWORD)
    actions = [(i["action"], i["actor"]) for i in await trail(api, token, limit=1)]
    assert ("admin_password_reset", "admin") in actions


async def test_the_trail_pages_without_gaps_and_never_shows_another_users_records(
        api: AuthApi, db: asyncpg.Connection) -> None:
    token = await api.registered_token()
    for _ in range(4):
        await api.login_token()
    await db.execute("INSERT INTO auth.auth_events (event, outcome, user_id, actor)"
                     " VALUES ('login', 'success', $1::uuid, $1::text)", str(uuid.uuid4()))
    everything = await trail(api, token, limit=100)
    for limit in (1, 2, 3):
        assert await trail(api, token, limit=limit) == everything
    assert {item["actor"] for item in everything} == {api.claims(token).subject}
    assert [item["action"] for item in everything] == ["login"] * 5 + ["register"]


@pytest.mark.parametrize("stamp", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
async def test_audit_cursor_outside_the_utc_calendar_is_400(api: AuthApi, stamp: str) -> None:
    token = await api.registered_token()
    cursor = encode_position(Position(datetime.fromisoformat(stamp), 1))
    response = await api.request("GET", f"/auth/audit?cursor={cursor}", token)
    assert response.status == 400
    assert (await response.json())["code"] == "invalid_cursor"
