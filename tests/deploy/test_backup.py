"""Encrypted backups on a real database and real files: create, verify, restore, refuse
what is wrong, prune."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pyrage
import pytest

from deploy import backup
from tests.support import (
    ROOT,
    create_database,
    drop_database,
    drop_restore_roles,
    make_restore_target,
    run,
    with_database,
)

MARKER = b"a very recognisable caption 0123456789"

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def source(postgres_admin_url) -> Iterator[backup.Database]:
    """A database with rows in two schemas, shared by the module (only read)."""
    name = f"tempo_backup_{secrets.token_hex(4)}_src"

    async def fill() -> None:
        await create_database(postgres_admin_url, name)
        connection = await asyncpg.connect(with_database(postgres_admin_url, name))
        try:
            await connection.execute("""
                CREATE SCHEMA auth; CREATE SCHEMA media;
                CREATE TABLE auth.users (id int PRIMARY KEY, name text NOT NULL);
                CREATE TABLE media.items (id uuid PRIMARY KEY, path text, size bigint);
                INSERT INTO auth.users SELECT g, 'user ' || g FROM generate_series(1, 500) g;
                INSERT INTO media.items SELECT gen_random_uuid(), 'u/' || g, g
                    FROM generate_series(1, 300) g;
            """)
        finally:
            await connection.close()

    run(fill())
    try:
        yield backup.Database(with_database(postgres_admin_url, name), None)
    finally:
        run(drop_database(postgres_admin_url, name))


@pytest.fixture(scope="module")
def role_prefix(postgres_admin_url) -> Iterator[str]:
    prefix = f"tempo_b{secrets.token_hex(4)}"
    yield prefix
    run(drop_restore_roles(postgres_admin_url, prefix))


@pytest.fixture
async def target(postgres_admin_url, role_prefix) -> AsyncIterator[backup.Database]:
    """An empty database to restore into, set up as a deployment's is: the service roles
    own the schemas, and the restore connects as the restore role."""
    name = f"tempo_backup_{secrets.token_hex(4)}_dst"
    url = await make_restore_target(postgres_admin_url, name, role_prefix)
    try:
        yield backup.Database(url, None)
    finally:
        await drop_database(postgres_admin_url, name)


@pytest.fixture(scope="module")
def media_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("media")
    (root / "owner-a").mkdir(parents=True)
    (root / "owner-b" / "nested").mkdir(parents=True)
    (root / "owner-a" / "photo").write_bytes(os.urandom(2_500_000))
    (root / "owner-a" / "empty").write_bytes(b"")
    (root / "owner-a" / "note").write_bytes(MARKER * 100)
    (root / "owner-b" / "nested" / "video").write_bytes(os.urandom(9_000_000))
    return root


@pytest.fixture(scope="module")
def sealing(identity, signer) -> backup.Keys:
    """What ``create`` is given: the recipient and the signing key."""
    return backup.Keys(recipients=(identity.to_public(),), signing_key=signer)


@pytest.fixture(scope="module")
def opening(identity, signer) -> backup.Keys:
    """What ``verify`` and ``restore`` are given: the identity and the verify key."""
    return backup.Keys(identities=(identity,), verify_key=signer.public_key())


@pytest.fixture(scope="module")
def made(tmp_path_factory, sealing, source, media_root) -> Path:
    """One backup of ``source`` and ``media_root``, made once for the module."""
    out = tmp_path_factory.mktemp("made") / "backup.age"
    backup.create(out, sealing, source, media_root)
    return out


@pytest.fixture
def copy(made, tmp_path) -> Path:
    """A copy of the module's backup that a test may damage."""
    path = tmp_path / "backup.age"
    shutil.copyfile(made, path)
    return path


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


async def rows(database: backup.Database) -> list:
    connection = await asyncpg.connect(database.url)
    try:
        return [await connection.fetch("SELECT * FROM auth.users ORDER BY id"),
                await connection.fetch("SELECT * FROM media.items ORDER BY id")]
    finally:
        await connection.close()


async def test_backup_then_restore_gives_equal_rows_and_byte_identical_media(
        tmp_path, source, target, media_root, opening, made):
    restored = tmp_path / "restored"
    manifest = await asyncio.to_thread(backup.restore, made, opening, target, restored)
    assert tree(restored) == tree(media_root)
    assert await rows(target) == await rows(source)
    assert set(manifest["files"]) >= {"tempo-backup/media/owner-a/photo",
                                      "tempo-backup/media/owner-b/nested/video"}


def test_backup_file_holds_no_plaintext_and_is_owner_only(made, identity):
    data = made.read_bytes()
    assert data.startswith(b"age-encryption.org/v1")
    # Plain age but for the signature trailer, as the module documents.
    assert pyrage.decrypt(data[:-backup.signing.TRAILER_SIZE], [identity])[257:262] == b"ustar"
    assert MARKER not in data
    assert b"user 42" not in data
    assert oct(made.stat().st_mode & 0o777) == oct(0o600)
    assert not list(made.parent.glob("*.partial"))


def test_verify_checks_every_checksum_and_writes_nothing(copy, opening):
    before = sorted(copy.parent.rglob("*"))
    manifest = backup.verify(copy, opening)
    assert manifest["database"]["size"] > 0
    assert len(manifest["files"]) >= 5
    assert sorted(copy.parent.rglob("*")) == before


async def test_wrong_key_is_a_clear_error_and_restores_nothing(tmp_path, target, copy,
                                                              signer):
    other = pyrage.x25519.Identity.generate()
    restored = tmp_path / "restored"
    with pytest.raises(backup.BackupError, match="wrong key"):
        await asyncio.to_thread(backup.restore, copy, backup.Keys(
            identities=(other,), verify_key=signer.public_key()), target, restored)
    await _assert_nothing_restored(target, restored)


@pytest.mark.parametrize("damage", ["truncated", "tampered", "header"])
async def test_truncated_or_tampered_backup_is_refused_and_restores_nothing(
        tmp_path, target, copy, opening, damage):
    data = bytearray(copy.read_bytes())
    if damage == "truncated":
        data = data[: len(data) * 2 // 3]
    elif damage == "tampered":
        data[len(data) // 2] ^= 0x01
    else:
        data[40] ^= 0x01
    copy.write_bytes(bytes(data))
    restored = tmp_path / "restored"
    with pytest.raises(backup.BackupError, match=r"not signed|truncated|altered"):
        await asyncio.to_thread(backup.verify, copy, opening)
    with pytest.raises(backup.BackupError):
        await asyncio.to_thread(backup.restore, copy, opening, target, restored)
    await _assert_nothing_restored(target, restored)


@pytest.mark.parametrize("lie", [b'"sha256": "', b'"size": '])
def test_a_well_encrypted_backup_whose_manifest_lies_is_refused(tmp_path, source, media_root,
                                                                sealing, opening, monkeypatch,
                                                                lie):
    original = backup.archive._add_bytes

    def lying_manifest(tar, name, data, mtime):
        if name == backup.MANIFEST:
            # the last entry: a file's checksum or size, not the database's
            at = data.rindex(lie)
            data = data[:at + len(lie)] + b"1" + data[at + len(lie):]
        original(tar, name, data, mtime)

    monkeypatch.setattr(backup.archive, "_add_bytes", lying_manifest)
    out = tmp_path / "lying.age"
    backup.create(out, sealing, source, media_root)
    with pytest.raises(backup.BackupError, match="checksum mismatch"):
        backup.verify(out, opening)


async def test_restore_refuses_a_database_or_media_root_that_is_not_empty(
        tmp_path, target, media_root, opening, copy):
    with pytest.raises(backup.BackupError, match=r"media root .* not empty"):
        await asyncio.to_thread(backup.restore, copy, opening, target, media_root)
    connection = await asyncpg.connect(target.url)
    try:
        await connection.execute("CREATE TABLE auth.leftover (id int)")
    finally:
        await connection.close()
    with pytest.raises(backup.BackupError, match="database is not empty"):
        await asyncio.to_thread(backup.restore, copy, opening, target, tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists() or not any((tmp_path / "fresh").iterdir())


async def test_passphrase_backups_round_trip_and_refuse_a_wrong_passphrase(
        tmp_path, source, target, media_root, signer):
    out = tmp_path / "backup.age"
    verify_key = signer.public_key()
    keys = backup.Keys(passphrase="a long enough passphrase", verify_key=verify_key)
    await asyncio.to_thread(backup.create, out, backup.Keys(
        passphrase="a long enough passphrase", signing_key=signer), source, media_root)
    with pytest.raises(backup.BackupError, match="wrong passphrase"):
        await asyncio.to_thread(backup.verify, out, backup.Keys(
            passphrase="not the passphrase", verify_key=verify_key))
    with pytest.raises(backup.BackupError, match="passphrase"):
        await asyncio.to_thread(backup.verify, out, backup.Keys(
            identities=(pyrage.x25519.Identity.generate(),), verify_key=verify_key))
    restored = tmp_path / "restored"
    await asyncio.to_thread(backup.restore, out, keys, target, restored)
    assert tree(restored) == tree(media_root)


def _command(env: dict[str, str]):
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "deploy.backup", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120, check=False)
    return run


def test_command_line_create_verify_and_wrong_key_exit_status(tmp_path, source, media_root):
    # The keys a deployment has: made with the other secrets.
    secrets_dir = tmp_path / "secrets"
    made_secrets = subprocess.run([sys.executable, "-m", "deploy.generate_secrets",
                                   str(secrets_dir)], cwd=ROOT, capture_output=True, text=True,
                                  timeout=60, check=False)
    assert made_secrets.returncode == 0, made_secrets.stderr
    (tmp_path / "other.txt").write_text(f"{pyrage.x25519.Identity.generate()}\n")
    run = _command({**os.environ, "Database__Url": source.url,
                    "MediaStorage__RootPath": str(media_root)})

    created = run("create", "--out-dir", str(tmp_path / "backups"), "--recipient-file",
                  str(secrets_dir / "backup_recipient"), "--signing-key-file",
                  str(secrets_dir / "backup_signing_key"))
    assert created.returncode == 0, created.stderr
    [made] = list((tmp_path / "backups").iterdir())
    assert backup.backup_time(made) is not None
    verify_key = ("--verify-key-file", str(secrets_dir / "backup_verify_key"))
    verified = run("verify", "--in", str(made), "--identity-file",
                   str(secrets_dir / "backup_identity"), *verify_key)
    assert verified.returncode == 0, verified.stderr
    refused = run("verify", "--in", str(made), "--identity-file", str(tmp_path / "other.txt"),
                  *verify_key)
    assert refused.returncode == 1
    assert refused.stderr.startswith("backup: error: wrong key")
    assert "Traceback" not in refused.stderr


@pytest.mark.parametrize("case", ["create", "verify", "restore"])
def test_missing_key_files_are_a_one_line_error(tmp_path, source, media_root, identity, made,
                                                case):
    (tmp_path / "key.txt").write_text(f"{identity}\n")
    missing = str(tmp_path / "nowhere" / "backup_key")
    run = _command({**os.environ, "Database__Url": source.url,
                    "MediaStorage__RootPath": str(tmp_path / "restored")})
    if case == "create":
        commands = [("create", "--out", str(tmp_path / "new.age"), "--recipient",
                     str(identity.to_public()), "--signing-key-file", missing),
                    ("create", "--out", str(tmp_path / "new.age"), "--recipient",
                     str(identity.to_public()))]
    else:
        commands = [(case, "--in", str(made), "--identity-file", str(tmp_path / "key.txt"),
                     "--verify-key-file", missing),
                    (case, "--in", str(made), "--identity-file", str(tmp_path / "key.txt"))]
    given, absent = (run(*command) for command in commands)
    assert (given.returncode, absent.returncode) == (1, 1)
    # (The source here has no audit trail, so create and restore add a warning line.)
    errors = [line for line in given.stderr.splitlines() + absent.stderr.splitlines()
              if not line.startswith("backup: warning:")]
    assert errors[0] == f"backup: error: cannot read {missing}: No such file or directory"
    flag = "--signing-key-file" if case == "create" else "--verify-key-file"
    assert errors[1].startswith(f"backup: error: give {flag}")
    assert len(errors) == 2
    assert not (tmp_path / "new.age").exists()
    assert not (tmp_path / "restored").exists()


def test_create_refuses_a_signing_key_that_sits_with_the_backups(tmp_path, source, media_root,
                                                                 identity):
    (tmp_path / "backups").mkdir()
    key = tmp_path / "backups" / "backup_signing_key"
    key.write_bytes(backup.signing.new_key_pair()[0])
    run = _command({**os.environ, "Database__Url": source.url,
                    "MediaStorage__RootPath": str(media_root)})
    refused = run("create", "--out-dir", str(tmp_path / "backups"), "--recipient",
                  str(identity.to_public()), "--signing-key-file", str(key))
    assert refused.returncode == 1
    assert refused.stderr.startswith("backup: error: the signing key must not sit with the "
                                     "backups")
    assert sorted(p.name for p in (tmp_path / "backups").iterdir()) == ["backup_signing_key"]


def test_pg_dump_must_match_the_server_version():
    with pytest.raises(backup.BackupError, match="no pg_dump of version 99"):
        backup.find_tool("pg_dump", 99)


def test_retention_keeps_7_daily_4_weekly_12_monthly():
    start = datetime(2026, 1, 1, 3, 15, tzinfo=UTC)
    # two backups a day for a year and a half
    times = [start + timedelta(hours=12 * i) for i in range(2 * 540)]
    keep = backup.to_keep(times, daily=7, weekly=4, monthly=12)
    newest = max(times)
    assert newest in keep
    days = {t.date() for t in keep if newest - t < timedelta(days=7)}
    assert len(days) == 7
    assert len({(t.year, t.month) for t in keep}) == 12
    assert len(keep) <= 7 + 4 + 12
    assert min(keep) > newest - timedelta(days=366)


def test_prune_removes_only_backups_beyond_retention(tmp_path):
    start = datetime(2026, 3, 1, tzinfo=UTC)
    for day in range(60):
        (tmp_path / backup.backup_name(start + timedelta(days=day))).write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("not a backup")
    dry = backup.prune(tmp_path, daily=7, weekly=4, monthly=12, dry_run=True)
    assert len(list(tmp_path.iterdir())) == 61
    removed = backup.prune(tmp_path, daily=7, weekly=4, monthly=12, dry_run=False)
    assert removed == dry
    left = sorted(p.name for p in tmp_path.iterdir())
    assert "notes.txt" in left
    assert len(left) - 1 == len(backup.to_keep(
        [start + timedelta(days=d) for d in range(60)], daily=7, weekly=4, monthly=12))
    assert backup.backup_name(start + timedelta(days=59)) in left


async def _assert_nothing_restored(target: backup.Database, restored: Path) -> None:
    assert not restored.exists() or not any(restored.rglob("*"))
    connection = await asyncpg.connect(target.url)
    try:
        assert await connection.fetchval(
            "SELECT count(*) FROM pg_tables WHERE schemaname IN ('auth', 'media')") == 0
    finally:
        await connection.close()
