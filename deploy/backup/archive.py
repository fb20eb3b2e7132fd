"""Writing a backup and reading it back: the tar stream of database parts, media files and
the manifest, inside the encryption."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from deploy.backup.common import (
    CHUNK,
    DATABASE_PART,
    FORMAT_VERSION,
    MANIFEST,
    MEDIA_PREFIX,
    PART_SIZE,
    PREFIX,
    BackupError,
)
from deploy.backup.signing import SignedBody
from deploy.backup.streams import Keys, decrypted, encrypt_stream
from deploy.backup.tools import Database, find_tool, server_version, tool_major


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
    server = asyncio.run(server_version(database))
    pg_dump = find_tool("pg_dump", server // 10000)
    if not media_root.is_dir():
        raise BackupError(f"media root {media_root} is not a directory")
    manifest: dict = {
        "format": FORMAT_VERSION,
        "createdAt": datetime.now(UTC).isoformat(timespec="seconds"),
        "database": {"serverVersionNum": server, "pgDump": f"{tool_major(pg_dump)}",
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
            encrypt_stream(produce, handle, keys)
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


def read_members(stream: BinaryIO, sink: Callable[[tarfile.TarInfo, bytes | None], None]
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


def check_members(manifest: dict, seen: list[Member]) -> None:
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


def verify(path: Path, keys: Keys, signed: SignedBody | None = None,
           database_sink: Callable[[bytes], None] | None = None) -> dict:
    """Check the signature over the whole file, then decrypt and check every checksum;
    nothing is written anywhere. ``database_sink`` sees the dump's bytes as they pass."""

    def sink(info: tarfile.TarInfo, chunk: bytes | None) -> None:
        if database_sink is not None and chunk is not None and \
                info.name.startswith(DATABASE_PART):
            database_sink(chunk)

    with decrypted(path, keys, signed) as stream:
        manifest, seen = read_members(stream, sink)
    check_members(manifest, seen)
    return manifest
