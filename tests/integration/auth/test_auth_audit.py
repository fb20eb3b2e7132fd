"""The audit trail: every auth event in auth.auth_events and in the log, with who, from
where and how it ended, never a password or token; and the table is append-only."""

from __future__ import annotations

import json

import asyncpg
import pytest
import structlog

from tests.integration.auth.auth_helpers import (
    GOOD_PASSWORD,
    OTHER_GOOD_PASSWORD,
    AuthApi,
    cookie_of,
)

WRONG = "definitely-not-it-99"


async def events(db: asyncpg.Connection) -> list[dict]:
    rows = await db.fetch("SELECT * FROM auth.auth_events ORDER BY id")
    return [dict(row) for row in rows]


async def test_every_kind_of_event_is_recorded(api: AuthApi, db: asyncpg.Connection) -> None:
    with structlog.testing.capture_logs() as logged:
        register = await api.register()
        await api.register(username="second")
        for _ in range(5):
            await api.login(password=WRONG)
        await api.login()
        await db.execute("UPDATE auth.login_failures SET locked_until = now() - interval '1s'")
        login = await api.login()
        token = cookie_of(login).value
        other = await api.login_token()
        sessions = (await (await api.request("GET", "/auth/sessions", token)).json())
        other_id = next(s["id"] for s in sessions["sessions"] if not s["current"])
        await api.request("DELETE", f"/auth/sessions/{other_id}", token)
        change = await api.request("POST", "/auth/password", token, json={
            "currentPassword": GOOD_PASSWORD, "newPassword": OTHER_GOOD_PASSWORD})
        fresh = cookie_of(change).value
        await api.request("POST", "/auth/logout", fresh)

    recorded = await events(db)
    kinds = [(e["event"], e["outcome"]) for e in recorded]
    # The five wrong passwords from one client share one record, counted.
    assert kinds == [
        ("register", "success"),
        ("register", "refused"),
        ("login", "failure"),
        ("lockout", "success"),
        ("login", "refused"),
        ("login", "success"),
        ("login", "success"),
        ("session_revoke", "success"),
        ("password_change", "success"),
        ("logout", "success"),
    ]
    assert all(e["ip"] == "203.0.113.7" for e in recorded)
    assert all(e["user_agent"] == "pytest-browser" for e in recorded)
    assert all(e["request_id"] for e in recorded)
    assert recorded[0]["request_id"] == register.headers["X-Request-ID"]
    assert recorded[0]["username"] == "Runner"
    user_id = await db.fetchval("SELECT id FROM auth.users")
    assert recorded[0]["user_id"] == user_id
    # The other session was already revoked on its own; only the caller's was left.
    assert json.loads(recorded[-2]["detail"])["sessions_revoked"] == 1

    assert await db.fetchval("SELECT repeats FROM auth.auth_event_repeats"
                             " WHERE event_id = $1", recorded[2]["id"]) == 4

    # The log says the same, event by event, each repeat too.
    audit_lines = [line for line in logged if line["event"] == "auth_event"]
    assert [(line["auth_event"], line["outcome"]) for line in audit_lines] == [
        *kinds[:2], *[("login", "failure")] * 5, *kinds[3:]]

    everything = json.dumps([{k: str(v) for k, v in e.items()} for e in recorded])
    everything += json.dumps(logged, default=str)
    for secret in (GOOD_PASSWORD, OTHER_GOOD_PASSWORD, WRONG, token, fresh, other):
        assert secret not in everything
    assert "$2b$" not in everything


async def test_failure_for_an_unknown_user_is_recorded_without_a_user_id(
        api: AuthApi, db: asyncpg.Connection) -> None:
    await api.login(username="ghost", password=WRONG)
    (event,) = await events(db)
    assert (event["event"], event["outcome"]) == ("login", "failure")
    assert event["username"] == "ghost"
    assert event["user_id"] is None


@pytest.mark.parametrize("statement", [
    "UPDATE auth.auth_events SET outcome = 'success'",
    "DELETE FROM auth.auth_events",
    "TRUNCATE auth.auth_events",
])
async def test_audit_table_is_append_only(api: AuthApi, db: asyncpg.Connection,
                                          statement: str) -> None:
    await api.login(username="ghost", password=WRONG)
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await db.execute(statement)
    assert len(await events(db)) == 1
