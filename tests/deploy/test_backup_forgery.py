"""Backups nobody but the signing key made are refused before a byte is decrypted, and a
restore loads only what a backup of this project holds, as a role that holds no more than
the project's schemas. Real databases, real pg_dump and pg_restore."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import secrets
import subprocess
import tarfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pyrage
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from deploy import backup, roles
from deploy.backup import policy, signing
from services.auth.app import MIGRATIONS as AUTH_MIGRATIONS
from services.media.app import MIGRATIONS as MEDIA_MIGRATIONS
from shared.db import migrate
from tests.support import (
    ROOT,
    drop_database,
    drop_restore_roles,
    make_restore_target,
    restore_roles,
    run,
    with_user,
)

pytestmark = pytest.mark.timeout(120)

ATTACKER_HASH = "$2b$12$" + "A" * 53
BACKDOOR = """
    CREATE FUNCTION auth.backdoor() RETURNS void LANGUAGE sql SECURITY DEFINER
        AS 'ALTER ROLE CURRENT_USER SUPERUSER';
"""


@pytest.fixture(scope="module")
def opening(identity, signer) -> backup.Keys:
    return backup.Keys(identities=(identity,), verify_key=signer.public_key())


@pytest.fixture(scope="module")
def role_prefix(postgres_admin_url) -> Iterator[str]:
    prefix = f"tempo_f{secrets.token_hex(4)}"
    yield prefix
    run(drop_restore_roles(postgres_admin_url, prefix))


@pytest.fixture
async def target(postgres_admin_url, role_prefix) -> AsyncIterator[backup.Database]:
    name = f"tempo_forge_{secrets.token_hex(4)}_dst"
    url = await make_restore_target(postgres_admin_url, name, role_prefix)
    try:
        yield backup.Database(url, None)
    finally:
        await drop_database(postgres_admin_url, name)


@pytest.fixture
def make_source(postgres_admin_url, role_prefix) -> Iterator:
    """``make(sql)``: a database migrated as a deployment's is (by the service roles, then
    sealed), with ``sql`` run on it by a superuser, as a compromised server might."""
    made: list[str] = []

    async def make(sql: str = "") -> backup.Database:
        name = f"tempo_forge_{secrets.token_hex(4)}_src"
        made.append(name)
        names = restore_roles(role_prefix)

        async def fill() -> str:
            url = with_user(await make_restore_target(postgres_admin_url, name, role_prefix),
                            "postgres")
            for service, folder in (("auth", AUTH_MIGRATIONS), ("media", MEDIA_MIGRATIONS)):
                connection = await asyncpg.connect(with_user(url, names[service]))
                try:
                    await migrate(connection, service, folder)
                finally:
                    await connection.close()
            admin = await asyncpg.connect(url)
            try:
                await roles.seal_audit_tables(admin, {s: names[s] for s in ("auth", "media")})
                await admin.execute(
                    "INSERT INTO auth.users (id, username, username_key, password_hash)"
                    " VALUES (gen_random_uuid(), 'owner', 'owner', $1)", ATTACKER_HASH)
                if sql:
                    await admin.execute(sql)
            finally:
                await admin.close()
            return url

        return backup.Database(await fill(), None)

    yield make
    for name in made:
        run(drop_database(postgres_admin_url, name))


def pg_dump(database: backup.Database) -> bytes:
    tool = backup.find_tool("pg_dump", 15)
    return subprocess.run([tool, "--format=custom", f"--dbname={database.url}"],
                          capture_output=True, check=True, timeout=60).stdout


def forge(out: Path, recipient, dump: bytes, media: dict[str, bytes]) -> None:
    """What anyone holding only the public recipient can make: the archive format, a
    manifest that matches it, encrypted with age."""
    buffer = io.BytesIO()
    files = {}
    part = f"{backup.archive.DATABASE_PART}000000"

    def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        files[name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}

    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        add(tar, part, dump)
        for name, data in media.items():
            add(tar, backup.archive.MEDIA_PREFIX + name, data)
        manifest = {"format": 1, "createdAt": "2026-01-01T03:15:00+00:00",
                    "database": {"serverVersionNum": 150000, "pgDump": "15", "parts": [part],
                                 "size": len(dump), "sha256": hashlib.sha256(dump).hexdigest()},
                    "files": files}
        info = tarfile.TarInfo(backup.MANIFEST)
        data = json.dumps(manifest).encode()
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    out.write_bytes(pyrage.encrypt(buffer.getvalue(), [recipient]))


async def snapshot(database: backup.Database) -> dict:
    """Every relation of the project's schemas with its rows, and every function."""
    connection = await asyncpg.connect(with_user(database.url, "postgres"))
    try:
        relations = await connection.fetch(
            "SELECT c.oid::regclass::text AS name, c.relkind::text FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname IN ('auth', 'media') ORDER BY 1")
        rows = {r["name"]: await connection.fetch(f"SELECT * FROM {r['name']}")
                for r in relations if r["relkind"] == "r"}
        functions = await connection.fetch(
            "SELECT p.oid::regprocedure::text, p.prosecdef, pg_get_userbyid(p.proowner)"
            " FROM pg_proc p ORDER BY 1")
        return {"relations": [tuple(r) for r in relations], "rows": rows,
                "functions": [tuple(f) for f in functions]}
    finally:
        await connection.close()


async def assert_refused(path: Path, keys: backup.Keys, target: backup.Database,
                         restored: Path, match: str) -> None:
    before = await snapshot(target)
    with pytest.raises(backup.BackupError, match=match):
        await asyncio.to_thread(backup.restore, path, keys, target, restored)
    assert await snapshot(target) == before
    assert not restored.exists() or not any(restored.rglob("*"))


@pytest.mark.parametrize("trailer", ["none", "copied key id"])
async def test_a_backup_forged_with_only_the_recipient_is_refused_and_changes_nothing(
        tmp_path, make_source, target, identity, signer, opening, trailer):
    forged = tmp_path / "tempo-20260101T031500Z.age"
    dump = await asyncio.to_thread(pg_dump, await make_source(BACKDOOR))
    forge(forged, identity.to_public(), dump, {"owner/photo": b"planted"})
    if trailer == "copied key id":
        # The verify key is public: its id can be copied, but not a signature.
        forged.write_bytes(forged.read_bytes() + signing.MAGIC
                           + signing.key_id(signer.public_key()) + secrets.token_bytes(64))
    match = "not signed" if trailer == "none" else "signature does not match"
    with pytest.raises(backup.BackupError, match=match):
        await asyncio.to_thread(backup.verify, forged, opening)
    await assert_refused(forged, opening, target, tmp_path / "restored", match)
    after = await snapshot(target)
    assert not any("backdoor" in name for name, *_ in after["functions"])


@pytest.fixture(scope="module")
def media_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("media")
    (root / "owner").mkdir()
    (root / "owner" / "photo").write_bytes(b"\x89PNG genuine")
    return root


@pytest.fixture
async def genuine(tmp_path, make_source, identity, signer, media_root) -> Path:
    out = tmp_path / "genuine.age"
    await asyncio.to_thread(backup.create, out, backup.Keys(
        recipients=(identity.to_public(),), signing_key=signer), await make_source(), media_root)
    return out


async def test_a_backup_signed_by_another_key_is_refused_before_decryption(
        tmp_path, make_source, target, identity, signer, media_root):
    foreign = tmp_path / "foreign.age"
    await asyncio.to_thread(backup.create, foreign, backup.Keys(
        recipients=(identity.to_public(),), signing_key=Ed25519PrivateKey.generate()),
        await make_source(), media_root)
    # With no identity that can decrypt it, only a check made before decrypting can answer.
    undecryptable = backup.Keys(identities=(pyrage.x25519.Identity.generate(),),
                                verify_key=signer.public_key())
    with pytest.raises(backup.BackupError, match="signed by another key"):
        backup.verify(foreign, undecryptable)
    await assert_refused(foreign, backup.Keys(identities=(identity,),
                                              verify_key=signer.public_key()),
                         target, tmp_path / "restored", "signed by another key")


@pytest.mark.parametrize("where", [0.01, 0.5, 0.99])
async def test_a_flipped_byte_is_refused_before_decryption(tmp_path, genuine, target, signer,
                                                           opening, where):
    data = bytearray(genuine.read_bytes())
    data[int((len(data) - signing.TRAILER_SIZE) * where)] ^= 0x01
    genuine.write_bytes(bytes(data))
    undecryptable = backup.Keys(identities=(pyrage.x25519.Identity.generate(),),
                                verify_key=signer.public_key())
    with pytest.raises(backup.BackupError, match="signature does not match"):
        backup.verify(genuine, undecryptable)
    await assert_refused(genuine, opening, target, tmp_path / "restored",
                         "signature does not match")


async def test_a_genuine_backup_of_a_deployment_restores_as_the_restore_role_owned_by_the_services(
        tmp_path, genuine, target, opening, role_prefix, media_root):
    restored = tmp_path / "restored"
    await asyncio.to_thread(backup.restore, genuine, opening, target, restored)
    assert (restored / "owner" / "photo").read_bytes() == b"\x89PNG genuine"
    names = restore_roles(role_prefix)
    after = await snapshot(target)
    owners = {owner for _, _, owner in after["functions"] if owner not in {"postgres"}}
    assert owners <= {names["auth"], names["media"]}
    assert {name for name, definer, _ in after["functions"] if definer} == {
        "auth.purge_audit(integer)", "media.purge_audit(integer)"}
    assert [row["password_hash"] for row in after["rows"]["auth.users"]] == [ATTACKER_HASH]
    connection = await asyncpg.connect(with_user(target.url, "postgres"))
    try:
        owned = await connection.fetch(
            "SELECT n.nspname, pg_get_userbyid(c.relowner) AS owner FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname IN ('auth', 'media') AND c.relkind IN ('r', 'v', 'S')")
    finally:
        await connection.close()
    assert {(row["nspname"], row["owner"]) for row in owned} == {
        ("auth", names["auth"]), ("media", names["media"])}


@pytest.mark.parametrize(("planted", "reason"), [
    (BACKDOOR, "SECURITY DEFINER function auth.backdoor"),
    ("CREATE FUNCTION auth.helper() RETURNS int LANGUAGE sql AS 'SELECT 1'",
     "FUNCTION auth.helper"),
    ("ALTER FUNCTION auth.guard_audit() SECURITY DEFINER",
     "SECURITY DEFINER function auth.guard_audit"),
    ("CREATE SCHEMA extra; CREATE TABLE extra.t (id int)", "SCHEMA extra"),
    ("CREATE FUNCTION public.helper() RETURNS int LANGUAGE sql AS 'SELECT 1'",
     "FUNCTION public.helper"),
    ("CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA media", "EXTENSION"),
])
async def test_a_signed_backup_holding_what_no_backup_of_the_project_holds_is_refused(
        tmp_path, make_source, target, identity, signer, opening, media_root, planted, reason):
    # The signing key is genuine, but the database it dumped was tampered with.
    out = tmp_path / "tainted.age"
    await asyncio.to_thread(backup.create, out, backup.Keys(
        recipients=(identity.to_public(),), signing_key=signer), await make_source(planted),
        media_root)
    await assert_refused(out, opening, target, tmp_path / "restored", reason)


async def test_restore_refuses_to_connect_as_a_superuser(tmp_path, genuine, target, opening):
    superuser = backup.Database(with_user(target.url, "postgres"), None)
    await assert_refused(genuine, opening, superuser, tmp_path / "restored", "restore role")


async def test_restore_refuses_a_role_with_more_than_the_projects_schemas(
        tmp_path, genuine, target, opening):
    extra = f"tempo_f{secrets.token_hex(4)}_other"
    admin = await asyncpg.connect(with_user(target.url, "postgres"))
    restore_role = target.url.split("//", 1)[1].split("@", 1)[0]
    try:
        await admin.execute(f'CREATE ROLE "{extra}"; GRANT "{extra}" TO "{restore_role}"')
        await assert_refused(genuine, opening, target, tmp_path / "restored", extra)
    finally:
        await admin.execute(f'DROP ROLE "{extra}"')
        await admin.close()


def test_the_known_objects_come_from_the_migrations_and_the_sealing():
    known = policy.known_objects()
    assert known.definers == {"auth.purge_audit", "media.purge_audit"}
    assert {"auth.guard_audit", "auth.refuse_change", "auth.announce_revocation",
            "media.guard_audit"} <= known.functions
    keep_audit = (ROOT / "deploy" / "postgres" / "keep-audit.sql").read_text()
    assert f"FUNCTION {policy.SEALING_FUNCTION}()" in keep_audit
    assert f"EVENT TRIGGER {policy.SEALING_EVENT_TRIGGER}" in (
        ROOT / "deploy" / "postgres" / "grant-gateway.sh").read_text()


def test_generated_signing_key_is_kept_and_its_verify_key_made_again(tmp_path):
    from deploy.generate_secrets import ensure_backup_signing_key

    verify_key = ensure_backup_signing_key(tmp_path)
    signing_key = tmp_path / "backup_signing_key"
    first = signing_key.read_bytes()
    assert oct(signing_key.stat().st_mode & 0o777) == oct(0o600)
    public = signing.load_verify_key(verify_key)
    assert signing.key_id(public) == signing.key_id(
        signing.load_signing_key(signing_key).public_key())
    verify_key.unlink()
    assert ensure_backup_signing_key(tmp_path) == verify_key
    assert signing_key.read_bytes() == first
    assert signing.key_id(signing.load_verify_key(verify_key)) == signing.key_id(public)
