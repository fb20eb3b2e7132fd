"""Per-service PostgreSQL roles with least privilege.

auth and media each own one schema; the gateway may only read ``auth.revoked_tokens`` and
LISTEN. The same rules are written in SQL for compose in ``deploy/postgres/``.

Role names and passwords reach PostgreSQL through ``format('%I', '%L')`` on the server, so
nothing here splices a value into SQL text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
OWNED_SCHEMAS = {"auth": "auth", "media": "media"}
REVOCATION_VIEW = "auth.revoked_tokens"


@dataclass(frozen=True, slots=True)
class Role:
    service: str
    name: str
    password: str


def role_name(prefix: str, service: str) -> str:
    name = f"{prefix}_{service}"
    if _NAME.fullmatch(name) is None:
        raise ValueError(f"not a valid role name: {name!r}")
    return name


async def _run(connection: asyncpg.Connection, template: str, *args: str) -> None:
    placeholders = ", ".join(f"${index + 2}::text" for index in range(len(args)))
    statement = await connection.fetchval(f"SELECT format($1::text, {placeholders})",
                                          template, *args)
    await connection.execute(statement)


async def ensure_database(admin: asyncpg.Connection, database: str) -> None:
    if _NAME.fullmatch(database) is None:
        raise ValueError(f"not a valid database name: {database!r}")
    exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
    if not exists:
        await _run(admin, "CREATE DATABASE %I", database)


async def ensure_roles(admin: asyncpg.Connection, database: str, roles: list[Role]) -> None:
    """Create or update the roles; ``admin`` is a superuser connected to ``database``."""
    await _run(admin, "REVOKE ALL ON DATABASE %I FROM PUBLIC", database)
    await admin.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")
    for role in roles:
        exists = await admin.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role.name)
        verb = "ALTER" if exists else "CREATE"
        await _run(admin, f"{verb} ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
                   "NOINHERIT NOREPLICATION PASSWORD %L", role.name, role.password)
        await _run(admin, "GRANT CONNECT, TEMPORARY ON DATABASE %I TO %I", database, role.name)
        schema = OWNED_SCHEMAS.get(role.service)
        if schema is not None:
            # Roles made by an earlier version held CREATE on the database; the schema
            # made here is all a service needs.
            await _run(admin, "REVOKE CREATE ON DATABASE %I FROM %I", database, role.name)
            await _run(admin, f"CREATE SCHEMA IF NOT EXISTS {schema} AUTHORIZATION %I",
                       role.name)
            await _run(admin, f"ALTER SCHEMA {schema} OWNER TO %I", role.name)


async def ensure_restore_role(admin: asyncpg.Connection, database: str, name: str,
                              password: str, owners: list[str]) -> None:
    """The role ``deploy.backup restore`` connects as: a member of the schema owners' roles
    and nothing else, as ``deploy/postgres/10-roles.sh`` makes ``tempo_restore``."""
    exists = await admin.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", name)
    verb = "ALTER" if exists else "CREATE"
    await _run(admin, f"{verb} ROLE %I LOGIN INHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE "
               "NOREPLICATION PASSWORD %L", name, password)
    await _run(admin, "GRANT CONNECT ON DATABASE %I TO %I", database, name)
    for owner in owners:
        await _run(admin, "GRANT %I TO %I", owner, name)


async def grant_revocation_reader(admin: asyncpg.Connection, gateway_role: str) -> bool:
    """Let the gateway read the revocation view; False while auth has not created it yet."""
    if await admin.fetchval("SELECT to_regclass($1)", REVOCATION_VIEW) is None:
        return False
    await _run(admin, "GRANT USAGE ON SCHEMA auth TO %I", gateway_role)
    await _run(admin, f"GRANT SELECT ON {REVOCATION_VIEW} TO %I", gateway_role)
    return True


async def drop_roles(admin: asyncpg.Connection, names: list[str]) -> None:
    """Drop roles after their objects (run in every database that holds any)."""
    for name in names:
        if await admin.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", name):
            await _run(admin, "DROP OWNED BY %I CASCADE", name)
            await _run(admin, "DROP ROLE %I", name)


# Each service's append-only audit table, the trigger function that guards it and the
# privileged purge; sealed once the service's migrations have created them.
AUDIT_OBJECTS = {
    "auth": ("auth.auth_events", "auth.guard_audit()", "auth.purge_audit(integer)"),
    "media": ("media.audit_events", "media.guard_audit()", "media.purge_audit(integer)"),
}

# Counts beside an audit table (repeats of one failure share a record): sealed the same way,
# with UPDATE of the count alone and DELETE, which their guard allows only to grow a count
# and to drop one whose record the purge removed.
AUDIT_COUNTS = {
    "auth": ("auth.auth_event_repeats", "auth.guard_audit_repeats()"),
}

# The event trigger function refusing drops of the audit trails; compose runs the same file.
KEEP_AUDIT_FUNCTION = (Path(__file__).parent / "postgres" / "keep-audit.sql").read_text()


async def seal_audit_tables(admin: asyncpg.Connection, service_roles: dict[str, str]
                            ) -> list[str]:
    """Make each existing audit table append-only (its counts grow-only) for its service role.

    ``admin`` is a superuser connected to the database; it takes ownership of the table,
    its guard and its purge function, and leaves the service role INSERT and SELECT on the
    table and EXECUTE on the purge. Returns the tables sealed; safe to run again.
    """
    sealed = []
    for service, (table, guard, purge) in AUDIT_OBJECTS.items():
        role = service_roles.get(service)
        if role is None or await admin.fetchval("SELECT to_regprocedure($1)", purge) is None:
            continue
        async with admin.transaction():
            await admin.execute(f"ALTER TABLE {table} OWNER TO CURRENT_USER")
            await admin.execute(f"ALTER FUNCTION {guard} OWNER TO CURRENT_USER")
            await admin.execute(f"ALTER FUNCTION {purge} OWNER TO CURRENT_USER")
            await _run(admin, f"REVOKE ALL ON {table} FROM PUBLIC, %I", role)
            await _run(admin, f"GRANT SELECT, INSERT ON {table} TO %I", role)
            await admin.execute(f"REVOKE ALL ON FUNCTION {purge} FROM PUBLIC")
            await _run(admin, f"GRANT EXECUTE ON FUNCTION {purge} TO %I", role)
        sealed.append(table)
    for service, (table, guard) in AUDIT_COUNTS.items():
        role = service_roles.get(service)
        if role is None or await admin.fetchval("SELECT to_regclass($1)", table) is None:
            continue
        async with admin.transaction():
            await admin.execute(f"ALTER TABLE {table} OWNER TO CURRENT_USER")
            await admin.execute(f"ALTER FUNCTION {guard} OWNER TO CURRENT_USER")
            await _run(admin, f"REVOKE ALL ON {table} FROM PUBLIC, %I", role)
            await _run(admin, f"GRANT SELECT, INSERT, DELETE, UPDATE (repeats) ON {table}"
                       " TO %I", role)
        sealed.append(table)
    async with admin.transaction():
        await admin.execute(KEEP_AUDIT_FUNCTION)
        if not await admin.fetchval(
                "SELECT 1 FROM pg_event_trigger WHERE evtname = 'tempo_keep_audit'"):
            await admin.execute("CREATE EVENT TRIGGER tempo_keep_audit ON sql_drop"
                                " EXECUTE FUNCTION public.tempo_keep_audit()")
    return sealed
