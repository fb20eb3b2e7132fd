"""Admin commands leave one audit record each: backup and restore (actor ``admin``, the
file's name, never a key or content), in the auth trail of the database they touched."""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path

import asyncpg
import pyrage
import pytest

from deploy import backup
from deploy.backup.signing import new_key_pair
from services.auth.app import MIGRATIONS
from shared.db import migrate
from tests.support import drop_restore_roles, make_restore_target, with_database


async def _create(admin_url: str, name: str, *, migrated: bool) -> str:
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = with_database(admin_url, name)
    if migrated:
        connection = await asyncpg.connect(url)
        try:
            await migrate(connection, "auth", MIGRATIONS)
        finally:
            await connection.close()
    return url


async def _drop(admin_url: str, name: str) -> None:
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def _records(url: str) -> list[dict]:
    connection = await asyncpg.connect(url)
    try:
        rows = await connection.fetch(
            "SELECT event, outcome, actor, user_id, ip, detail FROM auth.auth_events"
            " ORDER BY id")
    finally:
        await connection.close()
    return [{**dict(row), "detail": json.loads(row["detail"])} for row in rows]


@pytest.fixture
def databases(postgres_admin_url):
    names = [f"tempo_audit_{secrets.token_hex(5)}" for _ in range(2)]
    yield names
    for name in names:
        asyncio.run(_drop(postgres_admin_url, name))


@pytest.fixture
def role_prefix(postgres_admin_url):
    prefix = f"tempo_a{secrets.token_hex(4)}"
    yield prefix
    asyncio.run(drop_restore_roles(postgres_admin_url, prefix))


def test_backup_and_restore_each_record_one_admin_record(postgres_admin_url, role_prefix,
                                                         databases, tmp_path: Path) -> None:
    # (role_prefix first: its roles are dropped after the databases that use them.)
    source = asyncio.run(_create(postgres_admin_url, databases[0], migrated=True))
    # The restore connects as the restore role, into a database set up for it.
    target = asyncio.run(make_restore_target(postgres_admin_url, databases[1], role_prefix))
    identity = pyrage.x25519.Identity.generate()
    (tmp_path / "key.txt").write_text(f"{identity}\n")
    signing_key, verify_key = new_key_pair()
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "signing.pem").write_bytes(signing_key)
    (tmp_path / "verify.pem").write_bytes(verify_key)
    media = tmp_path / "media"
    media.mkdir()
    (media / "photo").write_bytes(b"secret photo bytes")
    out = tmp_path / "tempo.backup"

    assert backup.main(["create", "--out", str(out), "--recipient", str(identity.to_public()),
                        "--signing-key-file", str(tmp_path / "secrets" / "signing.pem"),
                        "--database-url", source, "--media-root", str(media)]) == 0
    (record,) = asyncio.run(_records(source))
    assert (record["event"], record["outcome"], record["actor"]) == ("backup", "success",
                                                                     "admin")
    assert record["user_id"] is None
    assert record["detail"] == {"file": out.name, "entries": record["detail"]["entries"]}

    assert backup.main(["restore", "--in", str(out), "--identity-file",
                        str(tmp_path / "key.txt"), "--verify-key-file",
                        str(tmp_path / "verify.pem"), "--database-url", target,
                        "--media-root", str(tmp_path / "restored")]) == 0
    restored = asyncio.run(_records(target))
    # The backup is recorded once it is written, so after its own dump: the restored
    # trail holds what was there before, plus exactly one record of the restore.
    assert [(r["event"], r["outcome"], r["actor"]) for r in restored] == [
        ("restore", "success", "admin")]
    text = json.dumps([r["detail"] for r in restored])
    assert str(identity) not in text
    assert "secret photo bytes" not in text


def test_a_failed_restore_is_recorded_as_a_failure_where_it_can_be(postgres_admin_url,
                                                                   databases,
                                                                   tmp_path: Path) -> None:
    target = asyncio.run(_create(postgres_admin_url, databases[0], migrated=True))
    (tmp_path / "key.txt").write_text(f"{pyrage.x25519.Identity.generate()}\n")
    (tmp_path / "garbage").write_bytes(b"not a backup")
    (tmp_path / "verify.pem").write_bytes(new_key_pair()[1])
    assert backup.main(["restore", "--in", str(tmp_path / "garbage"), "--identity-file",
                        str(tmp_path / "key.txt"), "--verify-key-file",
                        str(tmp_path / "verify.pem"), "--database-url", target,
                        "--media-root", str(tmp_path / "restored")]) == 1
    (record,) = asyncio.run(_records(target))
    assert (record["event"], record["outcome"], record["actor"]) == ("restore", "failure",
                                                                     "admin")
