"""Restore into an empty database and an empty media root, or leave both as they were."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import BinaryIO

import asyncpg

from deploy.backup import policy
from deploy.backup.archive import check_members, read_members, verify
from deploy.backup.common import DATABASE_PART, MEDIA_PREFIX, BackupError
from deploy.backup.dumpcheck import DumpReader
from deploy.backup.policy import PROJECT_SCHEMAS
from deploy.backup.signing import SignedBody
from deploy.backup.streams import Keys, decrypted, signature_of
from deploy.backup.tools import Database, find_tool, server_version


async def _is_empty(connection: asyncpg.Connection) -> bool:
    count = await connection.fetchval(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')"
        " AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'")
    return int(count) == 0


# The role a restore connects as may hold the project's schemas (through their owners'
# roles) and nothing more: no superuser, no roles or databases to make, no new schemas.
ROLE_CHECK = """
SELECT r.rolsuper OR r.rolcreaterole OR r.rolcreatedb OR r.rolbypassrls
           OR has_database_privilege(current_database(), 'CREATE') AS too_strong,
       array(SELECT s FROM unnest($1::text[]) s
             WHERE to_regnamespace(s) IS NULL
                OR NOT has_schema_privilege(s, 'CREATE')) AS unusable,
       array(SELECT b.rolname FROM pg_roles b
             WHERE b.rolname <> current_user AND pg_has_role(current_user, b.oid, 'USAGE')
               AND b.oid NOT IN (SELECT nspowner FROM pg_namespace
                                 WHERE nspname = ANY($1::text[]))) AS other_roles
FROM pg_roles r WHERE r.rolname = current_user
"""

# pg_restore --no-owner leaves the restoring role owning what it made; each object goes to
# the owner of its schema, as if that service had made it (ALTER TABLE also moves a table's
# indexes and its own sequences). The audit sealing then takes the audit trails over.
GIVE_TO_SCHEMA_OWNERS = """
DO $$
DECLARE
    item record;
BEGIN
    FOR item IN
        SELECT c.oid::regclass AS name, pg_get_userbyid(n.nspowner) AS owner
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname IN ('auth', 'media') AND c.relowner = current_user::regrole
          AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
          AND NOT EXISTS (SELECT 1 FROM pg_depend d
                          WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                            AND d.refclassid = 'pg_class'::regclass
                            AND d.deptype IN ('a', 'i'))
    LOOP
        EXECUTE format('ALTER TABLE %s OWNER TO %I', item.name, item.owner);
    END LOOP;
    FOR item IN
        SELECT p.oid::regprocedure AS name, pg_get_userbyid(n.nspowner) AS owner
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname IN ('auth', 'media') AND p.proowner = current_user::regrole
    LOOP
        EXECUTE format('ALTER ROUTINE %s OWNER TO %I', item.name, item.owner);
    END LOOP;
END
$$
"""


async def _check_target(database: Database) -> None:
    connection = await asyncpg.connect(database.url, password=database.password, timeout=10)
    try:
        row = await connection.fetchrow(ROLE_CHECK, list(PROJECT_SCHEMAS))
        empty = await _is_empty(connection)
    finally:
        await connection.close()
    if row["too_strong"] or row["other_roles"]:
        held = f" (it holds {', '.join(sorted(row['other_roles']))})" \
            if row["other_roles"] else ""
        raise BackupError("restore connects as the restore role (tempo_restore), which "
                          "holds only the project's schemas; this role may do more"
                          f"{held}")
    if row["unusable"]:
        raise BackupError(f"the restore role cannot create objects in schema(s) "
                          f"{', '.join(row['unusable'])}; set up the roles first "
                          "(deploy/postgres/10-roles.sh)")
    if not empty:
        raise BackupError("the database is not empty; restore only into an empty one")


async def _give_to_schema_owners(database: Database) -> None:
    connection = await asyncpg.connect(database.url, password=database.password, timeout=10)
    try:
        await connection.execute(GIVE_TO_SCHEMA_OWNERS)
    finally:
        await connection.close()


def _inspect(path: Path, keys: Keys, signed: SignedBody, pg_restore: str) -> tuple[dict, str]:
    """The first pass: verify every checksum while pg_restore reads the dump's contents;
    refuse the backup if they hold anything this project's backups do not."""
    reader = DumpReader(pg_restore)
    try:
        manifest = verify(path, keys, signed, reader.feed)
        listing, schema_sql = reader.finish()
    except BaseException:
        reader.kill()
        raise
    entries = policy.parse_toc(listing)
    found = policy.problems(entries, schema_sql, policy.known_objects())
    if found:
        shown = "; ".join(found[:5]) + (f"; and {len(found) - 5} more" if len(found) > 5
                                         else "")
        raise BackupError(f"the backup's database holds what no backup of this project "
                          f"holds, refusing it: {shown}")
    return manifest, policy.restore_list(entries)


def restore(path: Path, keys: Keys, database: Database, media_root: Path) -> dict:
    if media_root.exists() and any(media_root.iterdir()):
        raise BackupError(f"media root {media_root} is not empty; restore only into an "
                          "empty one")
    asyncio.run(_check_target(database))
    signed = signature_of(path, keys)
    server = asyncio.run(server_version(database))
    pg_restore = find_tool("pg_restore", server // 10000)
    manifest, use_list = _inspect(path, keys, signed, pg_restore)
    media_root.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    # pg_restore's messages (never backup data) go to a file so that a chatty stderr
    # cannot fill a pipe and stall the restore; the list it restores is only names.
    errors = tempfile.TemporaryFile()  # noqa: SIM115 - closed below
    listing = tempfile.NamedTemporaryFile("w", suffix=".list")  # noqa: SIM115 - closed below
    listing.write(use_list)
    listing.flush()
    restore_process = subprocess.Popen(  # noqa: S603
        [pg_restore, "--single-transaction", "--exit-on-error", "--no-password",
         "--no-owner", f"--use-list={listing.name}",
         f"--dbname={database.url}"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors,
        env=database.env())
    assert restore_process.stdin is not None
    output: dict[str, BinaryIO] = {}
    root = media_root.resolve()
    expected = manifest["files"]
    parts = iter(manifest["database"]["parts"])
    part: list[bytes] = []

    def to_database(info: tarfile.TarInfo, chunk: bytes | None) -> None:
        # Only bytes the first pass checked reach pg_restore: each part is held (one part
        # is the memory bound) until its checksum matches the verified manifest.
        if chunk is not None:
            part.append(chunk)
            return
        data = b"".join(part)
        part.clear()
        if info.name != next(parts, None) or \
                hashlib.sha256(data).hexdigest() != expected[info.name]["sha256"]:
            raise BackupError("the backup file changed while it was being restored")
        try:
            restore_process.stdin.write(data)
        except BrokenPipeError:
            restore_process.wait()
            raise BackupError(f"pg_restore failed: {_messages(errors)}") from None

    def sink(info: tarfile.TarInfo, chunk: bytes | None) -> None:
        if info.name.startswith(DATABASE_PART):
            to_database(info, chunk)
            return
        if not info.name.startswith(MEDIA_PREFIX):
            raise BackupError(f"unexpected entry in the backup: {info.name!r}")
        handle = output.get(info.name)
        if handle is None:
            target = (root / info.name[len(MEDIA_PREFIX):]).resolve()
            if not target.is_relative_to(root):
                raise BackupError(f"entry escapes the media root: {info.name!r}")
            target.parent.mkdir(parents=True, exist_ok=True)
            handle = target.open("xb")
            written.append(target)
            output[info.name] = handle
        if chunk is None:
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
            del output[info.name]
        else:
            handle.write(chunk)

    try:
        try:
            with decrypted(path, keys, signed) as stream:
                second, seen = read_members(stream, sink)
            check_members(second, seen)
        except BaseException:
            # Killed before its input ends, pg_restore cannot commit.
            restore_process.kill()
            raise
        finally:
            for handle in output.values():
                handle.close()
            with contextlib.suppress(BrokenPipeError):
                restore_process.stdin.close()
            restore_process.wait()
        if restore_process.returncode != 0:
            raise BackupError(f"pg_restore failed: {_messages(errors)}")
        asyncio.run(_give_to_schema_owners(database))
    except BaseException:
        if restore_process.poll() is None:
            restore_process.kill()
            restore_process.wait()
        for target in written:
            target.unlink(missing_ok=True)
        _remove_empty_dirs(media_root)
        raise
    finally:
        errors.close()
        listing.close()
    return second


def _messages(handle: BinaryIO) -> str:
    handle.seek(0)
    return handle.read(64 * 1024).decode(errors="replace").strip()


def _remove_empty_dirs(root: Path) -> None:
    for directory, _dirnames, _files in sorted(os.walk(root), key=lambda item: -len(item[0])):
        if Path(directory) != root:
            with contextlib.suppress(OSError):
                Path(directory).rmdir()

