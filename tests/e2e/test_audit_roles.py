"""In a running stack the audit tables are sealed: each service's own database role can
add and read records, and cannot change, delete, truncate or drop them, nor disable their
guard. Connections are made as those restricted roles."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from deploy.stack import BackgroundStack
from tests.support import with_database

TABLES = {"auth": "auth.auth_events", "media": "media.audit_events"}
INSERTS = {
    "auth": "INSERT INTO auth.auth_events (event, outcome, actor) VALUES ('probe', 'success',"
            " 'admin') RETURNING id",
    "media": "INSERT INTO media.audit_events (action, outcome, actor) VALUES ('probe',"
             " 'success', 'admin') RETURNING id",
}


def connect_as(stack: BackgroundStack, service: str):
    role = stack.stack.role_names[service]
    password = (stack.stack.secrets_dir / f"db_{service}_password").read_text().strip()
    url = with_database(stack.stack.admin_url, stack.stack.database)
    return asyncpg.connect(url, user=role, password=password)


@pytest.mark.parametrize("service", ["auth", "media"])
def test_the_service_role_can_append_and_read_but_not_alter_its_audit_records(
        stack: BackgroundStack, service: str) -> None:
    table = TABLES[service]

    async def probe() -> dict[str, str]:
        connection = await connect_as(stack, service)
        outcomes = {}
        try:
            record = await connection.fetchval(INSERTS[service])
            assert await connection.fetchval(
                f"SELECT count(*) FROM {table} WHERE id = $1", record) == 1
            for statement in (
                    f"UPDATE {table} SET outcome = 'failure' WHERE id = {record}",
                    f"DELETE FROM {table} WHERE id = {record}",
                    f"TRUNCATE {table}",
                    f"ALTER TABLE {table} DISABLE TRIGGER ALL",
                    f"DROP TABLE {table}",
                    f"DROP SCHEMA {service} CASCADE",
                    f"DROP FUNCTION {service}.guard_audit() CASCADE",
                    f"SELECT {service}.purge_audit(1)"):
                try:
                    await connection.execute(statement)
                    outcomes[statement] = "allowed"
                except asyncpg.PostgresError as exc:
                    outcomes[statement] = type(exc).__name__
            assert await connection.fetchval(
                f"SELECT outcome FROM {table} WHERE id = $1", record) == "success"
            # Retention through the privileged function works for the role.
            assert await connection.fetchval(f"SELECT {service}.purge_audit(30)") == 0
        finally:
            await connection.close()
        return outcomes

    outcomes = asyncio.run(probe())
    assert "allowed" not in outcomes.values(), outcomes
    assert set(list(outcomes.values())[:6]) == {"InsufficientPrivilegeError"}, outcomes


def test_the_gateway_role_cannot_read_audit_tables(stack: BackgroundStack) -> None:
    async def probe() -> list[str]:
        connection = await connect_as(stack, "gateway")
        refused = []
        try:
            for table in TABLES.values():
                try:
                    await connection.fetch(f"SELECT * FROM {table}")
                except asyncpg.InsufficientPrivilegeError:
                    refused.append(table)
        finally:
            await connection.close()
        return refused

    assert asyncio.run(probe()) == list(TABLES.values())


def test_the_auth_role_can_only_raise_a_repeat_count(stack: BackgroundStack) -> None:
    async def probe() -> dict[str, str]:
        connection = await connect_as(stack, "auth")
        outcomes = {}
        try:
            record = await connection.fetchval(INSERTS["auth"])
            await connection.execute(
                "INSERT INTO auth.auth_event_repeats (event_id, repeat_key, window_ends_at)"
                " VALUES ($1, 'probe', now() + interval '1 hour')", record)
            await connection.execute("UPDATE auth.auth_event_repeats SET repeats = repeats + 1"
                                     " WHERE event_id = $1", record)
            for statement in (
                    f"UPDATE auth.auth_event_repeats SET repeats = 0 WHERE event_id = {record}",
                    f"DELETE FROM auth.auth_event_repeats WHERE event_id = {record}",
                    "TRUNCATE auth.auth_event_repeats",
                    "ALTER TABLE auth.auth_event_repeats DISABLE TRIGGER ALL",
                    "DROP TABLE auth.auth_event_repeats"):
                try:
                    await connection.execute(statement)
                    outcomes[statement] = "allowed"
                except asyncpg.PostgresError as exc:
                    outcomes[statement] = type(exc).__name__
            assert await connection.fetchval(
                "SELECT repeats FROM auth.auth_event_repeats WHERE event_id = $1", record) == 1
        finally:
            await connection.close()
        return outcomes

    outcomes = asyncio.run(probe())
    assert set(outcomes.values()) == {"InsufficientPrivilegeError"}, outcomes
