"""The asyncpg pool and the migration runner.

Each service owns one schema and a folder of ``NNN_name.sql`` files. Pending files are
applied in order inside one transaction under an advisory lock, so two processes
starting at once cannot both apply them, and each applied file's SHA-256 is recorded so
that an edited, already-applied file stops the service instead of silently diverging.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import structlog
from aiohttp import web

from shared.keys import COMMON_SETTINGS, DB_POOL

log = structlog.get_logger("db")

_MIGRATION_NAME = re.compile(r"(\d{3})_[a-z0-9_]+\.sql")
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class MigrationError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(folder: Path) -> list[Migration]:
    migrations = []
    for path in sorted(folder.glob("*.sql")):
        match = _MIGRATION_NAME.fullmatch(path.name)
        if match is None:
            raise MigrationError(f"migration file name not of the form NNN_name.sql: {path.name}")
        migrations.append(Migration(int(match.group(1)), path.name,
                                    path.read_text(encoding="utf-8")))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migrations share a number in {folder}")
    return migrations


async def migrate(connection: asyncpg.Connection, schema: str, folder: Path) -> list[str]:
    """Apply the pending migrations of ``schema``; returns the names applied."""
    if _SCHEMA_NAME.fullmatch(schema) is None:
        raise MigrationError(f"not a valid schema name: {schema!r}")
    migrations = load_migrations(folder)
    applied_now: list[str] = []
    async with connection.transaction():
        # hashtext gives a stable int4 per schema, so services lock independently.
        await connection.execute("SELECT pg_advisory_xact_lock(hashtext($1))",
                                 f"tempo-migrate:{schema}")
        # CREATE SCHEMA IF NOT EXISTS needs CREATE on the database even when the schema
        # exists; asking first lets a service role that was given only its own schema
        # migrate it. The name is checked against _SCHEMA_NAME above; identifiers cannot be
        # passed as parameters.
        if not await connection.fetchval(
                "SELECT 1 FROM pg_namespace WHERE nspname = $1", schema):
            await connection.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        await connection.execute(
            f"CREATE TABLE IF NOT EXISTS {schema}.schema_migrations ("  # nosec B608
            " version integer PRIMARY KEY, name text NOT NULL, sha256 text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        rows = await connection.fetch(
            f"SELECT version, name, sha256 FROM {schema}.schema_migrations"  # noqa: S608  # nosec B608
        )
        applied = {row["version"]: row for row in rows}
        for migration in migrations:
            row = applied.get(migration.version)
            if row is not None:
                if row["sha256"] != migration.checksum:
                    raise MigrationError(
                        f"{schema}: applied migration {row['name']} was changed afterwards"
                    )
                continue
            await connection.execute(migration.sql)
            await connection.execute(
                f"INSERT INTO {schema}.schema_migrations (version, name, sha256)"  # noqa: S608  # nosec B608
                " VALUES ($1, $2, $3)",
                migration.version, migration.name, migration.checksum,
            )
            applied_now.append(migration.name)
    if applied_now:
        log.info("migrations_applied", schema=schema, migrations=applied_now)
    return applied_now


async def create_pool(dsn: str, *, schema: str | None = None, min_size: int = 1,
                      max_size: int = 10) -> asyncpg.Pool:
    server_settings = {"application_name": f"tempo-{schema or 'service'}"}
    if schema:
        server_settings["search_path"] = schema
    return await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size,
                                     server_settings=server_settings, command_timeout=30)


def database_context(schema: str, migrations: Path | None, *, max_size: int = 10
                     ) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context: open the pool, migrate, and close the pool on shutdown."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        settings = app[COMMON_SETTINGS]
        pool = await create_pool(settings.database_url.reveal(), schema=schema,
                                 max_size=max_size)
        try:
            if migrations is not None:
                async with pool.acquire() as connection:
                    await migrate(connection, schema, migrations)
            app[DB_POOL] = pool
            yield
        finally:
            await pool.close()

    return context
