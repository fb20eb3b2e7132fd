"""Database administration for the tests: a migrated template, a clean copy of it per test,
and the restore targets the backup tests build as the deployment does."""

from __future__ import annotations

import asyncio

import asyncpg

from tests.support.env import strong_secret, with_database, with_user


async def server_answers(url: str) -> bool:
    try:
        connection = await asyncpg.connect(url, timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await connection.close()
    return True


def run(coro):
    return asyncio.run(coro)


async def create_database(admin_url: str, name: str) -> None:
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()


async def create_template(admin_url: str, name: str) -> None:
    """An empty database with every service's migrations applied, in the order the
    services start; per-test databases are copied from it instead of migrated anew."""
    from services.auth.app import MIGRATIONS as AUTH_MIGRATIONS
    from services.media.app import MIGRATIONS as MEDIA_MIGRATIONS
    from shared.db import migrate

    await create_database(admin_url, name)
    connection = await asyncpg.connect(with_database(admin_url, name))
    try:
        await migrate(connection, "auth", AUTH_MIGRATIONS)
        await migrate(connection, "media", MEDIA_MIGRATIONS)
    finally:
        # CREATE DATABASE ... TEMPLATE refuses while anyone is connected to the template.
        await connection.close()


async def copy_database(admin_url: str, template: str, name: str) -> None:
    admin = await asyncpg.connect(admin_url)
    try:
        # WAL_LOG (the default) copies a small database block by block without the
        # checkpoint FILE_COPY forces; it measured the faster of the two here.
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    finally:
        await admin.close()


async def drop_database(admin_url: str, name: str) -> None:
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def restore_roles(prefix: str) -> dict[str, str]:
    from deploy import roles

    return {name: roles.role_name(prefix, name) for name in ("auth", "media", "restore")}


async def make_restore_target(admin_url: str, database: str, prefix: str) -> str:
    """An empty database as ``deploy/postgres/10-roles.sh`` leaves one (schemas owned by the
    service roles, and the restore role); returns its URL as the restore role."""
    from deploy import roles

    names = restore_roles(prefix)
    admin = await asyncpg.connect(admin_url)
    try:
        await roles.ensure_database(admin, database)
    finally:
        await admin.close()
    url = with_database(admin_url, database)
    admin = await asyncpg.connect(url)
    try:
        await roles.ensure_roles(admin, database, [
            roles.Role(service, names[service], strong_secret()) for service in ("auth", "media")])
        await roles.ensure_restore_role(admin, database, names["restore"], strong_secret(),
                                        [names["auth"], names["media"]])
    finally:
        await admin.close()
    return with_user(url, names["restore"])


async def drop_restore_roles(admin_url: str, prefix: str) -> None:
    from deploy import roles

    admin = await asyncpg.connect(admin_url)
    try:
        names = restore_roles(prefix)
        await roles.drop_roles(admin, [names["restore"], names["auth"], names["media"]])
    finally:
        await admin.close()
