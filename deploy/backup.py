"""Encrypted backups of the database and the media tree, with a tested restore.

    python -m deploy.backup create  --out FILE | --out-dir DIR   (--recipient | --passphrase-file)
    python -m deploy.backup verify  --in FILE   (--identity-file | --passphrase-file)
    python -m deploy.backup restore --in FILE   (--identity-file | --passphrase-file)
    python -m deploy.backup prune   --dir DIR [--keep-daily 7 --keep-weekly 4 --keep-monthly 12]

A backup is one age-encrypted tar stream: ``pg_dump --format=custom`` cut into parts, every
file of the media tree, and last a manifest with each member's SHA-256. It is produced and
consumed as a stream: no unencrypted byte is ever written to disk, and memory stays bounded
by one part. age authenticates every 64 KiB chunk and the end of the stream, so a wrong key,
a truncated file or a changed byte is an error, never silently different data.

Restore goes only into an empty database and an empty media root. It first verifies the
whole file, then restores in a second pass (``pg_restore --single-transaction``), checking
every checksum again; on any failure the restored files are removed and the transaction
is rolled back, so nothing is left half-restored.

With a passphrase, the stream is encrypted to a fresh x25519 key made for that backup, and
that key, encrypted with the passphrase (age scrypt), leads the file. With a recipient the
file is plain age: ``age -d -i key.txt FILE | tar t`` reads it too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import pyrage

FORMAT_VERSION = 1
PREFIX = "tempo-backup"
MANIFEST = f"{PREFIX}/manifest.json"
DATABASE_PART = f"{PREFIX}/database/part-"
MEDIA_PREFIX = f"{PREFIX}/media/"
PART_SIZE = 8 * 1024 * 1024
CHUNK = 1024 * 1024
PASSPHRASE_MAGIC = b"TEMPO-BACKUP-PASSPHRASE-1\n"
NAME_PATTERN = re.compile(r"tempo-(\d{8}T\d{6}Z)\.age")
EXIT_FAILED = 1
# The services' own settings, so a backup job can share their environment.
DATABASE_URL = "Database__Url"
DATABASE_PASSWORD = "Database__Password"  # noqa: S105 - the setting name
MEDIA_ROOT = "MediaStorage__RootPath"
EXIT_USAGE = 2


class BackupError(Exception):
    """A backup cannot be made, read or restored; the message says why."""


# ---------------------------------------------------------------- keys and streams
@dataclass(frozen=True, slots=True)
class Keys:
    recipients: tuple[object, ...] = ()
    identities: tuple[object, ...] = ()
    passphrase: str | None = None


def _read_secret_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise BackupError(f"cannot read {path}: {exc.strerror}") from None


def recipients_from(values: Iterable[str]) -> tuple[object, ...]:
    result = []
    for value in values:
        for line in value.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                result.append(pyrage.x25519.Recipient.from_str(line))
            except pyrage.RecipientError:
                raise BackupError("not an age recipient (age1...)") from None
    return tuple(result)


def identities_from(text: str) -> tuple[object, ...]:
    result = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            result.append(pyrage.x25519.Identity.from_str(line))
        except pyrage.IdentityError:
            raise BackupError("the identity file holds something that is not an age "
                              "identity (AGE-SECRET-KEY-...)") from None
    if not result:
        raise BackupError("the identity file holds no age identity")
    return tuple(result)


def _encrypt_stream(produce: Callable[[BinaryIO], None], out: BinaryIO, keys: Keys) -> None:
    """Run ``produce(writer)`` in a thread; what it writes is encrypted into ``out``."""
    recipients = list(keys.recipients)
    if keys.passphrase is not None:
        session = pyrage.x25519.Identity.generate()
        wrapped = pyrage.passphrase.encrypt(str(session).encode(), keys.passphrase)
        out.write(PASSPHRASE_MAGIC + struct.pack(">I", len(wrapped)) + wrapped)
        recipients = [session.to_public()]
    if not recipients:
        raise BackupError("give --recipient/--recipient-file or --passphrase-file")
    read_fd, write_fd = os.pipe()
    failure: list[BaseException] = []

    def run() -> None:
        with open(write_fd, "wb", buffering=CHUNK) as writer:
            try:
                produce(writer)
            except BaseException as exc:
                failure.append(exc)

    thread = threading.Thread(target=run, name="backup-producer", daemon=True)
    thread.start()
    with open(read_fd, "rb", buffering=CHUNK) as reader:
        try:
            pyrage.encrypt_io(reader, out, recipients)
        finally:
            # Unblocks the producer if encryption stopped early.
            with contextlib.suppress(OSError):
                reader.read()
    thread.join()
    if failure:
        raise failure[0]


def _open_identities(source: BinaryIO, keys: Keys) -> list[object]:
    head = source.read(len(PASSPHRASE_MAGIC))
    if head == PASSPHRASE_MAGIC:
        if keys.passphrase is None:
            raise BackupError("this backup was made with a passphrase: give --passphrase-file")
        (length,) = struct.unpack(">I", source.read(4).rjust(4, b"\0"))
        wrapped = source.read(length)
        if len(wrapped) != length:
            raise BackupError("the backup file is truncated")
        try:
            session = pyrage.passphrase.decrypt(wrapped, keys.passphrase)
        except pyrage.DecryptError:
            raise BackupError("wrong passphrase, or the backup file was altered") from None
        return [pyrage.x25519.Identity.from_str(session.decode())]
    source.seek(0)
    if not keys.identities:
        raise BackupError("this backup is encrypted to a recipient: give --identity-file")
    return list(keys.identities)


@contextlib.contextmanager
def decrypted(path: Path, keys: Keys) -> Iterator[BinaryIO]:
    """The plaintext of ``path`` as a readable stream, decrypted by a thread as it is read.
    A decryption failure (wrong key, truncation, tampering) raises BackupError at exit even
    when the reader had stopped early."""
    try:
        source = path.open("rb")
    except OSError as exc:
        raise BackupError(f"cannot read {path}: {exc.strerror}") from None
    read_fd, write_fd = os.pipe()
    failure: list[BaseException] = []
    with source:
        identities = _open_identities(source, keys)

        def run() -> None:
            with open(write_fd, "wb", buffering=CHUNK) as writer:
                try:
                    pyrage.decrypt_io(source, writer, identities)
                except BrokenPipeError:
                    pass
                except BaseException as exc:
                    failure.append(exc)

        thread = threading.Thread(target=run, name="backup-decrypt", daemon=True)
        thread.start()
        reader = open(read_fd, "rb", buffering=CHUNK)  # noqa: SIM115 - closed below
        try:
            yield reader
            # The reader may stop at the tar end marker; age's own end-of-stream check
            # (truncation) comes only after the last byte, so read to the end.
            while reader.read(CHUNK):
                pass
        except BaseException:
            reader.close()
            thread.join()
            if failure:
                raise _decrypt_error(failure[0]) from None
            raise
        reader.close()
        thread.join()
        if failure:
            raise _decrypt_error(failure[0]) from None


def _decrypt_error(exc: BaseException) -> BackupError:
    text = str(exc).lower()
    if "no matching keys" in text or "no identity" in text:
        return BackupError("wrong key: none of the given identities can open this backup")
    return BackupError(f"the backup file is truncated or was altered, and cannot be "
                       f"decrypted ({exc})")


# ---------------------------------------------------------------- database tools
@dataclass(frozen=True, slots=True)
class Database:
    url: str              # without a password
    password: str | None

    def env(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        if self.password:
            env["PGPASSWORD"] = self.password
        return env


def database_from(url: str | None, password_file: str | None = None) -> Database:
    url = url or os.environ.get(DATABASE_URL)
    if not url:
        raise BackupError("give --database-url or set Database__Url")
    parts = urlsplit(url)
    password = parts.password
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "password"]
    password = dict(parse_qsl(parts.query)).get("password", password)
    password_file = password_file or os.environ.get(DATABASE_PASSWORD + "_FILE")
    if password_file:
        password = _read_secret_file(Path(password_file))
    elif os.environ.get(DATABASE_PASSWORD):
        password = os.environ[DATABASE_PASSWORD]
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port:
        host += f":{parts.port}"
    user = f"{parts.username}@" if parts.username else ""
    clean = urlunsplit((parts.scheme, f"{user}{host}", parts.path, urlencode(query), ""))
    return Database(clean, password or None)


async def _server_version(database: Database) -> int:
    connection = await asyncpg.connect(database.url, password=database.password, timeout=10)
    try:
        return int(await connection.fetchval("SHOW server_version_num"))
    finally:
        await connection.close()


def _tool_major(path: str) -> int:
    output = subprocess.run([path, "--version"], capture_output=True, text=True,  # noqa: S603
                            check=True).stdout
    match = re.search(r"(\d+)(?:\.\d+)?", output)
    if match is None:
        raise BackupError(f"cannot tell the version of {path}")
    return int(match.group(1))


def find_tool(name: str, server_major: int) -> str:
    """The PostgreSQL client tool whose major version matches the server's (or is the
    closest newer one): pg_dump refuses a newer server, and an older pg_restore cannot
    read a newer dump."""
    candidates = []
    override = os.environ.get(name.upper().replace("-", "_"))
    if override:
        candidates.append(override)
    found = shutil.which(name)
    if found:
        candidates.append(found)
    candidates += sorted(str(p) for p in Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    # The embedded server of `make run` ships its own tools, next to its postgres binary.
    with contextlib.suppress(ImportError):
        from importlib.util import find_spec

        spec = find_spec("pgserver")
        if spec is not None and spec.origin:
            candidates.append(str(Path(spec.origin).parent / "pginstall" / "bin" / name))
    usable = []
    for candidate in dict.fromkeys(candidates):
        if not Path(candidate).exists():
            continue
        with contextlib.suppress(OSError, subprocess.CalledProcessError, BackupError):
            major = _tool_major(candidate)
            if major >= server_major:
                usable.append((major, candidate))
    if not usable:
        raise BackupError(f"no {name} of version {server_major} or newer for a PostgreSQL "
                          f"{server_major} server (Debian: apt-get install "
                          f"postgresql-client-{server_major})")
    return min(usable)[1]


# ---------------------------------------------------------------- create
def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mtime: float) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(mtime)
    info.mode = 0o600
    tar.addfile(info, io.BytesIO(data))


def _media_files(root: Path) -> Iterator[Path]:
    for directory, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for filename in sorted(filenames):
            path = Path(directory, filename)
            if path.is_file() and not path.is_symlink():
                yield path


class _HashingReader(io.RawIOBase):
    def __init__(self, handle: BinaryIO, size: int) -> None:
        self._handle = handle
        self._left = size
        self.sha256 = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._left <= 0:
            return 0
        data = self._handle.read(min(len(buffer), self._left))
        if not data:
            raise BackupError("a media file shrank while it was being backed up")
        buffer[: len(data)] = data
        self._left -= len(data)
        self.sha256.update(data)
        return len(data)


def create(out: Path, keys: Keys, database: Database, media_root: Path) -> dict:
    """Write an encrypted backup to ``out`` (via ``out.partial``); returns the manifest."""
    server = asyncio.run(_server_version(database))
    pg_dump = find_tool("pg_dump", server // 10000)
    if not media_root.is_dir():
        raise BackupError(f"media root {media_root} is not a directory")
    manifest: dict = {
        "format": FORMAT_VERSION,
        "createdAt": datetime.now(UTC).isoformat(timespec="seconds"),
        "database": {"serverVersionNum": server, "pgDump": f"{_tool_major(pg_dump)}",
                     "parts": []},
        "files": {},
    }

    def produce(writer: BinaryIO) -> None:
        now = datetime.now(UTC).timestamp()
        with tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            with subprocess.Popen(  # noqa: S603
                    [pg_dump, "--format=custom", "--compress=6", "--no-password",
                     f"--dbname={database.url}"],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=database.env(),
            ) as dump:
                assert dump.stdout is not None
                total = hashlib.sha256()
                size = 0
                index = 0
                while True:
                    part = dump.stdout.read(PART_SIZE)
                    if not part:
                        break
                    name = f"{DATABASE_PART}{index:06d}"
                    _add_bytes(tar, name, part, now)
                    manifest["files"][name] = {"size": len(part),
                                               "sha256": hashlib.sha256(part).hexdigest()}
                    manifest["database"]["parts"].append(name)
                    total.update(part)
                    size += len(part)
                    index += 1
                stderr = dump.stderr.read().decode(errors="replace") if dump.stderr else ""
                if dump.wait() != 0:
                    raise BackupError(f"pg_dump failed: {stderr.strip()}")
            manifest["database"].update(size=size, sha256=total.hexdigest())
            for path in _media_files(media_root):
                relative = path.relative_to(media_root).as_posix()
                with path.open("rb") as handle:
                    stat = os.fstat(handle.fileno())
                    info = tarfile.TarInfo(MEDIA_PREFIX + relative)
                    info.size = stat.st_size
                    info.mtime = int(stat.st_mtime)
                    info.mode = 0o600
                    reader = _HashingReader(handle, stat.st_size)
                    tar.addfile(info, io.BufferedReader(reader, CHUNK))
                manifest["files"][info.name] = {"size": stat.st_size,
                                                "sha256": reader.sha256.hexdigest()}
            _add_bytes(tar, MANIFEST, json.dumps(manifest, indent=1).encode(), now)

    partial = out.with_name(out.name + ".partial")
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise BackupError(f"{partial} exists: another backup is running, or remove it") \
            from None
    try:
        with open(fd, "wb") as handle:
            _encrypt_stream(produce, handle, keys)
            handle.flush()
            os.fsync(handle.fileno())
        if out.exists():
            raise BackupError(f"{out} exists; refusing to overwrite it")
        partial.rename(out)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return manifest


# ---------------------------------------------------------------- read back
@dataclass
class Member:
    name: str
    size: int
    sha256: str


def _safe_member_name(name: str) -> bool:
    parts = name.split("/")
    return (name.startswith(f"{PREFIX}/") and ".." not in parts and "" not in parts
            and "\x00" not in name and not name.startswith("/"))


def _read_members(stream: BinaryIO, sink: Callable[[tarfile.TarInfo, bytes | None], None]
                  ) -> tuple[dict, list[Member]]:
    """Walk the tar stream, hashing every member; ``sink(info, chunk)`` receives the bytes
    (``chunk=None`` marks a member's end). Returns the manifest and what was seen."""
    manifest = None
    seen: list[Member] = []
    database = hashlib.sha256()
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for info in tar:
                if not info.isfile() or not _safe_member_name(info.name):
                    raise BackupError(f"unexpected entry in the backup: {info.name!r}")
                if manifest is not None:
                    raise BackupError("the backup has entries after its manifest")
                handle = tar.extractfile(info)
                assert handle is not None
                if info.name == MANIFEST:
                    data = handle.read(16 * 1024 * 1024)
                    try:
                        manifest = json.loads(data)
                    except ValueError:
                        raise BackupError("the backup's manifest is not valid JSON") from None
                    continue
                digest = hashlib.sha256()
                is_database = info.name.startswith(DATABASE_PART)
                while chunk := handle.read(CHUNK):
                    digest.update(chunk)
                    if is_database:
                        database.update(chunk)
                    sink(info, chunk)
                sink(info, None)
                seen.append(Member(info.name, info.size, digest.hexdigest()))
    except tarfile.TarError as exc:
        raise BackupError(f"the backup's content is damaged ({exc})") from None
    if manifest is None:
        raise BackupError("the backup has no manifest: it is truncated or not a Tempo backup")
    if manifest.get("format") != FORMAT_VERSION:
        raise BackupError(f"unknown backup format {manifest.get('format')!r}")
    parts = [member.name for member in seen if member.name.startswith(DATABASE_PART)]
    if parts != manifest.get("database", {}).get("parts") or \
            database.hexdigest() != manifest["database"].get("sha256"):
        raise BackupError("checksum mismatch for the database dump")
    return manifest, seen


def _check(manifest: dict, seen: list[Member]) -> None:
    expected = manifest.get("files", {})
    names = [member.name for member in seen]
    if len(set(names)) != len(names):
        raise BackupError("the backup holds the same entry twice")
    if set(names) != set(expected):
        missing = sorted(set(expected) - set(names))[:5]
        extra = sorted(set(names) - set(expected))[:5]
        raise BackupError(f"the backup's entries differ from its manifest "
                          f"(missing {missing}, unexpected {extra})")
    for member in seen:
        want = expected[member.name]
        if want.get("size") != member.size or want.get("sha256") != member.sha256:
            raise BackupError(f"checksum mismatch for {member.name}")


def verify(path: Path, keys: Keys) -> dict:
    """Decrypt and check every checksum; nothing is written anywhere."""
    with decrypted(path, keys) as stream:
        manifest, seen = _read_members(stream, lambda info, chunk: None)
    _check(manifest, seen)
    return manifest


# ---------------------------------------------------------------- restore
async def _database_is_empty(database: Database) -> bool:
    connection = await asyncpg.connect(database.url, password=database.password, timeout=10)
    try:
        count = await connection.fetchval(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')"
            " AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'")
        return int(count) == 0
    finally:
        await connection.close()


def restore(path: Path, keys: Keys, database: Database, media_root: Path) -> dict:
    if media_root.exists() and any(media_root.iterdir()):
        raise BackupError(f"media root {media_root} is not empty; restore only into an "
                          "empty one")
    if not asyncio.run(_database_is_empty(database)):
        raise BackupError("the database is not empty; restore only into an empty one")
    manifest = verify(path, keys)
    server = asyncio.run(_server_version(database))
    pg_restore = find_tool("pg_restore", max(server // 10000,
                                             int(manifest["database"].get("pgDump", 0))))
    media_root.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    # pg_restore's messages (never backup data) go to a file so that a chatty stderr
    # cannot fill a pipe and stall the restore.
    errors = tempfile.TemporaryFile()  # noqa: SIM115 - closed below
    restore_process = subprocess.Popen(  # noqa: S603
        [pg_restore, "--single-transaction", "--exit-on-error", "--no-password",
         "--clean", "--if-exists", f"--dbname={database.url}"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors,
        env=database.env())
    assert restore_process.stdin is not None
    output: dict[str, BinaryIO] = {}
    root = media_root.resolve()

    def sink(info: tarfile.TarInfo, chunk: bytes | None) -> None:
        if info.name.startswith(DATABASE_PART):
            if chunk is not None:
                try:
                    restore_process.stdin.write(chunk)
                except BrokenPipeError:
                    restore_process.wait()
                    raise BackupError(f"pg_restore failed: {_messages(errors)}") from None
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
            with decrypted(path, keys) as stream:
                second, seen = _read_members(stream, sink)
            _check(second, seen)
        finally:
            for handle in output.values():
                handle.close()
            with contextlib.suppress(BrokenPipeError):
                restore_process.stdin.close()
            restore_process.wait()
        if restore_process.returncode != 0:
            raise BackupError(f"pg_restore failed: {_messages(errors)}")
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
    return second


def _messages(handle: BinaryIO) -> str:
    handle.seek(0)
    return handle.read(64 * 1024).decode(errors="replace").strip()


def _remove_empty_dirs(root: Path) -> None:
    for directory, _dirnames, _files in sorted(os.walk(root), key=lambda item: -len(item[0])):
        if Path(directory) != root:
            with contextlib.suppress(OSError):
                Path(directory).rmdir()


# ---------------------------------------------------------------- prune
def backup_time(path: Path) -> datetime | None:
    match = NAME_PATTERN.fullmatch(path.name)
    if match is None:
        return None
    return datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def backup_name(moment: datetime) -> str:
    return f"tempo-{moment.astimezone(UTC):%Y%m%dT%H%M%SZ}.age"


def to_keep(times: Iterable[datetime], *, daily: int, weekly: int, monthly: int
            ) -> set[datetime]:
    """Grandfather-father-son: the newest backup of each of the last ``daily`` days,
    ``weekly`` ISO weeks and ``monthly`` months that have one."""
    ordered = sorted(set(times), reverse=True)
    keep: set[datetime] = set()
    for count, period in ((daily, lambda t: t.date()),
                          (weekly, lambda t: t.isocalendar()[:2]),
                          (monthly, lambda t: (t.year, t.month))):
        periods: set[object] = set()
        for moment in ordered:
            key = period(moment)
            if key in periods:
                continue
            if len(periods) >= count:
                break
            periods.add(key)
            keep.add(moment)
    return keep


def prune(folder: Path, *, daily: int, weekly: int, monthly: int, dry_run: bool
          ) -> list[Path]:
    backups = {path: moment for path in folder.iterdir()
               if (moment := backup_time(path)) is not None}
    keep = to_keep(backups.values(), daily=daily, weekly=weekly, monthly=monthly)
    removed = sorted(path for path, moment in backups.items() if moment not in keep)
    if not dry_run:
        for path in removed:
            path.unlink()
    return removed


# ---------------------------------------------------------------- command line
def _keys(args: argparse.Namespace, *, encrypting: bool) -> Keys:
    passphrase = None
    if getattr(args, "passphrase_file", None):
        passphrase = _read_secret_file(Path(args.passphrase_file))
        if len(passphrase) < 12:
            raise BackupError("the passphrase must be at least 12 characters")
    if encrypting:
        values = list(args.recipient or [])
        values += [_read_secret_file(Path(f)) for f in args.recipient_file or []]
        recipients = recipients_from(values)
        if bool(recipients) == bool(passphrase):
            raise BackupError("give recipients or a passphrase file (exactly one of them)")
        return Keys(recipients=recipients, passphrase=passphrase)
    identities: tuple[object, ...] = ()
    if getattr(args, "identity_file", None):
        identities = identities_from(_read_secret_file(Path(args.identity_file)))
    if not identities and passphrase is None:
        raise BackupError("give --identity-file or --passphrase-file")
    return Keys(identities=identities, passphrase=passphrase)


def _media_root(value: str | None) -> Path:
    value = value or os.environ.get(MEDIA_ROOT)
    if not value:
        raise BackupError("give --media-root or set MediaStorage__RootPath")
    return Path(value)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m deploy.backup",
                                     description="Encrypted backups of Tempo.")
    commands = parser.add_subparsers(dest="command", required=True)

    def target(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--database-url", help="default: Database__Url")
        sub.add_argument("--database-password-file", help="default: Database__Password_FILE")
        sub.add_argument("--media-root", help="default: MediaStorage__RootPath")

    create_cmd = commands.add_parser("create", help="write a new encrypted backup")
    where = create_cmd.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", help="the backup file to write")
    where.add_argument("--out-dir", help="a folder: the file is named tempo-<UTC time>.age")
    create_cmd.add_argument("--recipient", action="append", help="an age recipient (age1...)")
    create_cmd.add_argument("--recipient-file", action="append",
                            help="a file of age recipients, one a line")
    create_cmd.add_argument("--passphrase-file")
    target(create_cmd)

    for name, text in (("verify", "decrypt and check every checksum"),
                       ("restore", "restore into an empty database and media root")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--in", dest="input", required=True)
        sub.add_argument("--identity-file", help="age identities (AGE-SECRET-KEY-...)")
        sub.add_argument("--passphrase-file")
        if name == "restore":
            target(sub)

    prune_cmd = commands.add_parser("prune", help="delete backups beyond the retention")
    prune_cmd.add_argument("--dir", required=True)
    prune_cmd.add_argument("--keep-daily", type=int, default=7)
    prune_cmd.add_argument("--keep-weekly", type=int, default=4)
    prune_cmd.add_argument("--keep-monthly", type=int, default=12)
    prune_cmd.add_argument("--dry-run", action="store_true")
    return parser


AUDIT_INSERT = (
    "INSERT INTO auth.auth_events (event, outcome, actor, user_agent, detail)"
    " VALUES ($1, $2, 'admin', 'deploy.backup', $3::jsonb)"
)


async def _insert_audit(database: Database, action: str, outcome: str, detail: dict) -> None:
    connection = await asyncpg.connect(database.url, password=database.password, timeout=10)
    try:
        await connection.execute(AUDIT_INSERT, action, outcome, json.dumps(detail))
    finally:
        await connection.close()


def audit(database: Database | None, action: str, outcome: str, **detail: object) -> None:
    """Record the command in the audit trail; a trail that cannot be reached (a failed
    restore leaves an empty database) is reported, not fatal."""
    if database is None:
        return
    try:
        asyncio.run(_insert_audit(database, action, outcome, detail))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        print(f"backup: warning: the {action} was not recorded in the audit trail "
              f"({type(exc).__name__})", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    database: Database | None = None
    try:
        if args.command in {"create", "restore"}:
            database = database_from(args.database_url, args.database_password_file)
        if args.command == "create":
            keys = _keys(args, encrypting=True)
            if args.out:
                out = Path(args.out)
            else:
                Path(args.out_dir).mkdir(parents=True, exist_ok=True)
                out = Path(args.out_dir) / backup_name(datetime.now(UTC))
            manifest = create(out, keys, database, _media_root(args.media_root))
            audit(database, "backup", "success", file=out.name,
                  entries=len(manifest["files"]))
            print(f"backup written: {out} ({len(manifest['files'])} entries, "
                  f"database {manifest['database']['size']} bytes)")
        elif args.command == "verify":
            manifest = verify(Path(args.input), _keys(args, encrypting=False))
            print(f"backup verified: {args.input} ({len(manifest['files'])} entries, "
                  f"made {manifest['createdAt']})")
        elif args.command == "restore":
            manifest = restore(Path(args.input), _keys(args, encrypting=False),
                               database, _media_root(args.media_root))
            audit(database, "restore", "success", file=Path(args.input).name,
                  entries=len(manifest["files"]))
            print(f"backup restored and verified: {args.input} "
                  f"({len(manifest['files'])} entries)")
        else:
            removed = prune(Path(args.dir), daily=args.keep_daily, weekly=args.keep_weekly,
                            monthly=args.keep_monthly, dry_run=args.dry_run)
            verb = "would remove" if args.dry_run else "removed"
            for path in removed:
                print(f"{verb} {path}")
            print(f"{len(removed)} backup(s) {verb}")
    except BackupError as exc:
        print(f"backup: error: {exc}", file=sys.stderr)
        if args.command in {"create", "restore"}:
            audit(database, "backup" if args.command == "create" else "restore", "failure",
                  error=type(exc).__name__)
        return EXIT_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
