"""The migration runner against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import asyncpg
import pytest

from shared.db import MigrationError, migrate


@pytest.fixture
def schema() -> str:
    return f"mig_{secrets.token_hex(4)}"


@pytest.fixture
async def connect(database_url: str, schema: str):
    connections: list[asyncpg.Connection] = []

    async def opener() -> asyncpg.Connection:
        connection = await asyncpg.connect(database_url)
        connections.append(connection)
        return connection

    yield opener
    if connections:
        await connections[0].execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    for connection in connections:
        await connection.close()


def write(folder: Path, name: str, sql: str) -> None:
    (folder / name).write_text(sql)


async def test_migrations_apply_in_order_once(tmp_path: Path, schema: str, connect) -> None:
    write(tmp_path, "002_more.sql", f"ALTER TABLE {schema}.t ADD COLUMN b int;")
    write(tmp_path, "001_init.sql", f"CREATE TABLE {schema}.t (a int);")
    connection = await connect()
    assert await migrate(connection, schema, tmp_path) == ["001_init.sql", "002_more.sql"]
    assert await migrate(connection, schema, tmp_path) == []
    rows = await connection.fetch(f"SELECT version FROM {schema}.schema_migrations ORDER BY 1")
    assert [row["version"] for row in rows] == [1, 2]


async def test_concurrent_starts_apply_each_migration_once(tmp_path: Path, schema: str,
                                                           connect) -> None:
    # Without the advisory lock the second CREATE TABLE would fail or run twice.
    write(tmp_path, "001_init.sql",
          f"CREATE TABLE {schema}.t (a int); SELECT pg_sleep(0.3);")
    connections = [await connect() for _ in range(4)]
    results = await asyncio.gather(*(migrate(c, schema, tmp_path) for c in connections))
    assert sorted(len(result) for result in results) == [0, 0, 0, 1]


async def test_changed_applied_migration_is_an_error(tmp_path: Path, schema: str,
                                                     connect) -> None:
    write(tmp_path, "001_init.sql", f"CREATE TABLE {schema}.t (a int);")
    connection = await connect()
    await migrate(connection, schema, tmp_path)
    write(tmp_path, "001_init.sql", f"CREATE TABLE {schema}.t (a bigint);")
    with pytest.raises(MigrationError, match="changed"):
        await migrate(connection, schema, tmp_path)


async def test_failing_migration_leaves_nothing_applied(tmp_path: Path, schema: str,
                                                        connect) -> None:
    write(tmp_path, "001_init.sql", f"CREATE TABLE {schema}.t (a int);")
    write(tmp_path, "002_bad.sql", "THIS IS NOT SQL;")
    connection = await connect()
    with pytest.raises(asyncpg.PostgresSyntaxError):
        await migrate(connection, schema, tmp_path)
    assert await connection.fetchval("SELECT to_regclass($1)", f"{schema}.t") is None


@pytest.mark.parametrize("name", ["1_init.sql", "001-init.sql", "001_Init.sql"])
async def test_badly_named_migration_file_is_an_error(tmp_path: Path, schema: str, connect,
                                                      name: str) -> None:
    write(tmp_path, name, "SELECT 1;")
    with pytest.raises(MigrationError, match="NNN_name"):
        await migrate(await connect(), schema, tmp_path)


async def test_schema_name_is_validated(tmp_path: Path, connect) -> None:
    with pytest.raises(MigrationError, match="schema"):
        await migrate(await connect(), "x; DROP TABLE y", tmp_path)
