"""Per-service database roles: each owns its schema, the gateway only reads the revocation
list. Run against the test PostgreSQL with randomly named roles, dropped afterwards."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import asyncpg
import pytest

from deploy import roles
from services.auth.app import MIGRATIONS as AUTH_MIGRATIONS
from services.media.app import MIGRATIONS as MEDIA_MIGRATIONS
from shared.db import migrate
from tests.support import CI, ROOT, run, with_database

SERVICES = ("auth", "media", "gateway")


@pytest.fixture
async def setup(postgres_admin_url):
    database = f"tempo_roles_{secrets.token_hex(4)}"
    prefix = f"tempo_t{secrets.token_hex(4)}"
    names = {service: roles.role_name(prefix, service) for service in SERVICES}
    admin = await asyncpg.connect(postgres_admin_url)
    try:
        await roles.ensure_database(admin, database)
        in_db = await asyncpg.connect(with_database(postgres_admin_url, database))
        try:
            await roles.ensure_roles(in_db, database, [
                roles.Role(service, names[service], secrets.token_urlsafe(24))
                for service in SERVICES])
        finally:
            await in_db.close()
        yield with_database(postgres_admin_url, database), names
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await roles.drop_roles(admin, list(names.values()))
        await admin.close()


async def as_role(url: str, role: str) -> asyncpg.Connection:
    # The test server trusts loopback; the roles' own passwords matter in production.
    return await asyncpg.connect(url, user=role)


async def test_each_service_owns_its_schema_and_nothing_else(setup):
    url, names = setup
    auth = await as_role(url, names["auth"])
    media = await as_role(url, names["media"])
    try:
        await auth.execute("CREATE TABLE auth.users (id int)")
        await media.execute("CREATE TABLE media.items (id int)")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await media.fetch("SELECT * FROM auth.users")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await auth.execute("CREATE TABLE media.sneaky (id int)")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await media.execute("CREATE TABLE public.sneaky (id int)")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await auth.execute("CREATE SCHEMA sneaky")
        # Its own schema is enough for the migration runner, whose schema already exists.
        assert await migrate(media, "media", MEDIA_MIGRATIONS)
        assert await migrate(media, "media", MEDIA_MIGRATIONS) == []
    finally:
        await auth.close()
        await media.close()
    admin = await asyncpg.connect(url)
    try:
        for name in names.values():
            assert not await admin.fetchval(
                "SELECT has_database_privilege($1, current_database(), 'CREATE')", name)
    finally:
        await admin.close()


async def test_the_gateway_may_only_read_the_revocation_view_and_listen(setup,
                                                                        postgres_admin_url):
    url, names = setup
    auth = await as_role(url, names["auth"])
    try:
        await auth.execute("CREATE TABLE auth.sessions (jti text, expires_at timestamptz,"
                           " revoked_at timestamptz, password_hash text)")
        await auth.execute("CREATE VIEW auth.revoked_tokens AS SELECT jti, expires_at"
                           " FROM auth.sessions WHERE revoked_at IS NOT NULL")
    finally:
        await auth.close()
    admin = await asyncpg.connect(url)
    try:
        assert await roles.grant_revocation_reader(admin, names["gateway"])
    finally:
        await admin.close()
    gateway = await as_role(url, names["gateway"])
    try:
        assert await gateway.fetch("SELECT jti, expires_at FROM auth.revoked_tokens") == []
        await gateway.add_listener("tempo_revocations", lambda *args: None)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await gateway.fetch("SELECT * FROM auth.sessions")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await gateway.execute("DELETE FROM auth.revoked_tokens")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await gateway.execute("CREATE TABLE public.sneaky (id int)")
    finally:
        await gateway.close()


async def test_grant_waits_for_the_view_to_exist(setup):
    url, names = setup
    admin = await asyncpg.connect(url)
    try:
        assert await roles.grant_revocation_reader(admin, names["gateway"]) is False
    finally:
        await admin.close()


def test_role_names_are_checked():
    with pytest.raises(ValueError, match="role name"):
        roles.role_name("tempo; DROP", "auth")


@pytest.fixture(scope="module")
def private_server():
    """A PostgreSQL of this module's own: the compose init script uses fixed role names,
    which must not be created on a shared server."""
    if shutil.which("psql") is None:
        message = "psql is not installed (Debian: postgresql-client)"
        if CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    # Outside pytest's own temporary root: a concurrent pytest run resets that to 0700, and
    # the server runs as an unprivileged user that must reach its data directory.
    folder = Path(tempfile.mkdtemp(prefix="tempo-pg-"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

        server = pgserver.get_server(folder / "data", cleanup_mode="stop")
    try:
        yield server
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


async def migrate_as(socket_dir: str, role: str, schema: str, folder: Path) -> None:
    connection = await asyncpg.connect(host=socket_dir, user=role, database="tempo")
    try:
        await migrate(connection, schema, folder)
    finally:
        await connection.close()


def test_compose_init_script_gives_least_privilege(private_server, tmp_path):
    uri = private_server.get_uri()
    socket_dir = parse_qs(urlsplit(uri).query)["host"][0]
    env = {**os.environ, "PGHOST": socket_dir, "PGUSER": "postgres", "POSTGRES_USER": "postgres",
           "POSTGRES_DB": "tempo", "SECRETS_DIR": str(tmp_path)}
    for name in ("db_auth_password", "db_media_password", "db_gateway_password",
                 "db_restore_password", "postgres_password"):
        (tmp_path / name).write_text(secrets.token_urlsafe(24))

    def psql(sql: str, *, user: str = "postgres", database: str = "tempo"):
        return subprocess.run(["psql", "-v", "ON_ERROR_STOP=1", "-X", "-q", "-At", "-U", user,
                               "-d", database, "-c", sql], env=env, capture_output=True,
                              text=True, check=False)

    assert psql("CREATE DATABASE tempo", database="postgres").returncode == 0
    init = subprocess.run(["sh", str(ROOT / "deploy/postgres/10-roles.sh")], env=env,
                          capture_output=True, text=True, check=False)
    assert init.returncode == 0, init.stderr
    # The services' own migrations, run as their own roles, as they do when they start.
    run(migrate_as(socket_dir, "tempo_auth", "auth", AUTH_MIGRATIONS))
    run(migrate_as(socket_dir, "tempo_media", "media", MEDIA_MIGRATIONS))
    grant = subprocess.run(["sh", str(ROOT / "deploy/postgres/grant-gateway.sh")],
                           env={**env, "PGHOST": socket_dir, "PGDATABASE": "tempo"},
                           capture_output=True, text=True, check=False)
    assert grant.returncode == 0, grant.stderr

    assert psql("SELECT count(*) FROM auth.revoked_tokens", user="tempo_gateway").stdout \
        .strip() == "0"
    assert psql("SELECT * FROM auth.sessions", user="tempo_gateway").returncode != 0
    assert psql("SELECT * FROM media.media", user="tempo_gateway").returncode != 0
    assert psql("SELECT * FROM auth.users", user="tempo_gateway").returncode != 0
    assert psql("SELECT * FROM auth.sessions", user="tempo_media").returncode != 0
    assert psql("CREATE TABLE media.x (id int)", user="tempo_auth").returncode != 0
    assert psql("CREATE TABLE public.x (id int)", user="tempo_gateway").returncode != 0
    for role in ("tempo_auth", "tempo_media", "tempo_gateway", "tempo_restore"):
        assert psql("CREATE SCHEMA sneaky", user=role).returncode != 0
    # The restore role holds the two schemas (through their owners) and nothing more.
    assert psql("CREATE TABLE auth.restored (id int); CREATE TABLE media.restored (id int)",
                user="tempo_restore").returncode == 0
    assert psql("CREATE TABLE public.x (id int)", user="tempo_restore").returncode != 0
    assert psql("SELECT rolsuper OR rolcreaterole OR rolcreatedb FROM pg_roles"
                " WHERE rolname = 'tempo_restore'").stdout.strip() == "f"
    # Every role has a password: nothing logs in on an empty one once auth is required.
    assert psql("SELECT count(*) FROM pg_authid WHERE rolname LIKE 'tempo_%'"
                " AND rolpassword IS NULL").stdout.strip() == "0"
    # The audit trails are sealed: each service may append and read its own, no more, and
    # owning the schema does not let it drop the table (the event trigger says no).
    assert psql("INSERT INTO media.audit_events (action, actor, outcome)"
                " VALUES ('media_deleted', 'admin', 'success')",
                user="tempo_media").returncode == 0
    assert psql("DELETE FROM media.audit_events", user="tempo_media").returncode != 0
    dropped = psql("DROP TABLE media.audit_events", user="tempo_media")
    assert "append-only audit trail" in dropped.stderr
    dropped = psql("DROP FUNCTION auth.guard_audit() CASCADE", user="tempo_auth")
    assert dropped.returncode != 0


async def test_sealed_repeat_counts_only_grow_even_when_added_to_a_sealed_trail(
        setup, tmp_path):
    url, names = setup
    # A deployment sealed before the counts existed: its next start migrates them in as the
    # service role, which no longer owns the audit table; the next seal takes them too.
    earlier = tmp_path / "migrations"
    earlier.mkdir()
    for path in sorted(AUTH_MIGRATIONS.glob("*.sql"))[:2]:
        (earlier / path.name).write_text(path.read_text())
    auth = await as_role(url, names["auth"])
    admin = await asyncpg.connect(url)
    try:
        await migrate(auth, "auth", earlier)
        assert await roles.seal_audit_tables(admin, {"auth": names["auth"]}) == [
            "auth.auth_events"]
        await migrate(auth, "auth", AUTH_MIGRATIONS)
        assert await roles.seal_audit_tables(admin, {"auth": names["auth"]}) == [
            "auth.auth_events", "auth.auth_event_repeats"]

        event = await auth.fetchval("INSERT INTO auth.auth_events (event, outcome)"
                                    " VALUES ('login', 'failure') RETURNING id")
        await auth.execute("INSERT INTO auth.auth_event_repeats"
                           " (event_id, repeat_key, window_ends_at)"
                           " VALUES ($1, 'k', now() + interval '1 hour')", event)
        await auth.execute("UPDATE auth.auth_event_repeats SET repeats = repeats + 1")
        for statement in (
                "UPDATE auth.auth_event_repeats SET repeats = 0",
                "UPDATE auth.auth_event_repeats SET window_ends_at = now()",
                "DELETE FROM auth.auth_event_repeats",
                "TRUNCATE auth.auth_event_repeats",
                "ALTER TABLE auth.auth_event_repeats DISABLE TRIGGER ALL",
                "DROP TABLE auth.auth_event_repeats",
                "DROP FUNCTION auth.guard_audit_repeats() CASCADE"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await auth.execute(statement)
        assert await auth.fetchval("SELECT repeats FROM auth.auth_event_repeats") == 1
    finally:
        await auth.close()
        await admin.close()
