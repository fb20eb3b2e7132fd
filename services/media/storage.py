"""Files on disk: streaming into a temporary file, placing it, reading and removing it.

Layout under the storage root (which must be outside any web root)::

    <root>/.tmp/<random>.part      uploads being received
    <root>/<owner id>/<media id>   stored files, named only by ids this service generated

Top-level entries starting with a dot other than ``.tmp`` belong to other features of
this service and are left alone by the consistency checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import stat
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from uuid import UUID, uuid4

import structlog

from services.media.domain import SNIFF_BYTES
from shared.errors import PayloadTooLargeError

log = structlog.get_logger("media.storage")

TEMP_DIR_NAME = ".tmp"
TEMP_SUFFIX = ".part"
READ_CHUNK_BYTES = 256 * 1024
# Received bytes are handed to a worker thread in batches of about this size: one thread
# hand-off per MiB rather than per network read, and large enough buffers that hashing
# and writing run without the GIL. At most one batch is being written while the next one
# fills, so memory per upload stays around twice this.
WRITE_BATCH_BYTES = 1024 * 1024
# Far below IOV_MAX, so that one writev takes a whole batch of small chunks.
WRITE_BATCH_CHUNKS = 256
_DIR_MODE = 0o700
_FILE_MODE = 0o600
_OPEN_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC

T = TypeVar("T")


class StoragePathError(Exception):
    """A path that would leave the storage root; never expected with generated ids."""


class SizeLimitExceededError(PayloadTooLargeError):
    """The stream went past ``limit`` bytes; reading stopped at the first byte over it."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"The file is larger than {limit} bytes.", code="file_too_large",
                         limitBytes=limit)
        self.limit = limit


@dataclass(slots=True)
class Received:
    """A fully received, fsynced temporary file and what was learned while writing it."""

    path: Path
    size: int
    sha256: str
    # The first SNIFF_BYTES bytes (fewer for a shorter file).
    head: bytes
    placed: bool = field(default=False)


async def settled(future: Awaitable[T]) -> T:
    """Await ``future`` to completion even if the caller is cancelled meanwhile.

    Used for file-system steps whose outcome must be known before cleaning up: the work
    finishes, then the cancellation is passed on.
    """
    inner = asyncio.ensure_future(future)
    try:
        return await asyncio.shield(inner)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            await asyncio.wait([inner])
        raise


async def _quiesce(job: asyncio.Future[None]) -> None:
    """Wait for a write job that is being abandoned; its own error no longer matters."""
    try:
        await settled(job)
    except asyncio.CancelledError:
        raise
    except BaseException:
        # The file is being removed anyway; only the wait mattered.
        return


def _absorb(fd: int, hasher: hashlib._Hash, chunks: list[bytes]) -> None:
    # Runs in a worker thread: hashlib and os.writev release the GIL on large buffers, so
    # hashing and writing overlap the event loop parsing the next bytes.
    for chunk in chunks:
        hasher.update(chunk)
    views = [memoryview(chunk) for chunk in chunks]
    while views:
        written = os.writev(fd, views)
        while views and written >= len(views[0]):
            written -= len(views.pop(0))
        if views and written:
            views[0] = views[0][written:]


def _absorb_and_finish(fd: int, hasher: hashlib._Hash, chunks: list[bytes]) -> None:
    # The last bytes and the fsync in one hand-off: most import entries fit in one batch.
    try:
        _absorb(fd, hasher, chunks)
    except BaseException:
        os.close(fd)
        raise
    _finish(fd)


def _finish(fd: int) -> None:
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _place(temp: Path, final: Path) -> None:
    final.parent.mkdir(mode=_DIR_MODE, exist_ok=True)
    os.rename(temp, final)
    _fsync_dir(final.parent)


@dataclass(frozen=True, slots=True)
class StoredFile:
    owner_id: UUID
    media_id: UUID
    path: Path
    size: int
    mtime: float


@dataclass(frozen=True, slots=True)
class Stray:
    """Something in the owner area that is not ``<uuid>/<uuid>`` as a regular file."""

    path: Path
    regular_file: bool
    mtime: float


@dataclass(slots=True)
class Scan:
    files: list[StoredFile] = field(default_factory=list)
    strays: list[Stray] = field(default_factory=list)


def _uuid_name(name: str) -> UUID | None:
    if len(name) != 36:
        return None
    try:
        value = UUID(name)
    except ValueError:
        return None
    return value if str(value) == name else None


class MediaStorage:
    """The storage root and every file operation on it (blocking work off the loop)."""

    def __init__(self, root: Path) -> None:
        if not root.is_absolute():
            raise StoragePathError("the storage root must be an absolute path")
        self.root = root
        self.temp_dir = root / TEMP_DIR_NAME

    # --- set-up ----------------------------------------------------------------------

    def prepare(self) -> None:
        """Create the root and the temporary area (blocking; run once at start)."""
        self.root.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        self.temp_dir.mkdir(mode=_DIR_MODE, exist_ok=True)
        # Resolve once, so containment checks compare against the real location.
        self.root = self.root.resolve(strict=True)
        self.temp_dir = self.root / TEMP_DIR_NAME

    # --- paths -----------------------------------------------------------------------

    def path_for(self, owner_id: UUID, media_id: UUID) -> Path:
        """``<root>/<owner id>/<media id>``, refused if it would leave the root."""
        if not isinstance(owner_id, UUID) or not isinstance(media_id, UUID):
            raise StoragePathError("stored paths are built only from UUIDs")
        path = self.root / str(owner_id) / str(media_id)
        if Path(os.path.normpath(path)).parent.parent != self.root:
            raise StoragePathError("stored path leaves the storage root")
        return path

    # --- receiving -------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def receive(self, chunks: AsyncIterable[bytes], *, max_bytes: int,
                      on_head: Callable[[bytes], None] | None = None,
                      head_size: int = SNIFF_BYTES) -> AsyncIterator[Received]:
        """Stream ``chunks`` into a new temporary file; yield it once complete and fsynced.

        While writing, counts bytes (``SizeLimitExceededError`` before the first byte over
        ``max_bytes`` is written), hashes them, and calls ``on_head`` with the first
        ``head_size`` bytes as soon as they have arrived (or at the end, for a shorter
        stream) so that a check may raise and stop the read. The temporary file is removed
        on any failure, on cancellation, and on leaving the block unless ``place`` moved it.
        """
        loop = asyncio.get_running_loop()
        temp = self.temp_dir / f"{uuid4().hex}{TEMP_SUFFIX}"
        opening = loop.run_in_executor(None, os.open, temp, _OPEN_NEW, _FILE_MODE)
        fd = -1
        received: Received | None = None
        # The batch being hashed and written in a worker thread while the next one fills;
        # never more than one, so that writes land in order and memory stays bounded.
        writing: asyncio.Future[None] | None = None
        try:
            # A cancellation during the open must still learn the descriptor, or the
            # temporary file would outlive the request until the sweeper found it.
            fd = await settled(opening)
            hasher = hashlib.sha256()
            size = 0
            head = bytearray()
            head_pending = on_head is not None
            batch: list[bytes] = []
            batch_bytes = 0
            async for chunk in chunks:
                if not chunk:
                    continue
                if size + len(chunk) > max_bytes:
                    raise SizeLimitExceededError(max_bytes)
                size += len(chunk)
                if head_pending:
                    head += chunk[: head_size - len(head)]
                    if len(head) >= head_size:
                        head_pending = False
                        on_head(bytes(head))  # type: ignore[misc]
                batch.append(chunk)
                batch_bytes += len(chunk)
                if batch_bytes >= WRITE_BATCH_BYTES or len(batch) >= WRITE_BATCH_CHUNKS:
                    if writing is not None:
                        await settled(writing)
                    writing = loop.run_in_executor(None, _absorb, fd, hasher, batch)
                    batch, batch_bytes = [], 0
            if head_pending:
                on_head(bytes(head))  # type: ignore[misc]
            if writing is not None:
                await settled(writing)
            # -2: handed to the last job, which closes it; never closed here again.
            to_close, fd = fd, -2
            await settled(loop.run_in_executor(None, _absorb_and_finish, to_close, hasher,
                                               batch))
            received = Received(temp, size, hasher.hexdigest(), bytes(head))
            yield received
        finally:
            try:
                if writing is not None:
                    # A thread may still be writing to the descriptor: it must finish
                    # before the descriptor is closed (its number could be reused by
                    # another file) and before the file is removed.
                    await _quiesce(writing)
            finally:
                if fd == -1 and opening.done() and not opening.cancelled() \
                        and opening.exception() is None:
                    fd = opening.result()
                if fd >= 0:
                    os.close(fd)
                if received is None or not received.placed:
                    await settled(loop.run_in_executor(None, _unlink_quietly, temp))

    async def place(self, received: Received, owner_id: UUID, media_id: UUID) -> Path:
        """Rename a received file to its stored path and make the rename durable."""
        final = self.path_for(owner_id, media_id)
        loop = asyncio.get_running_loop()
        try:
            await settled(loop.run_in_executor(None, _place, received.path, final))
        except BaseException:
            # The rename may or may not have happened; either way the file must go.
            await settled(loop.run_in_executor(None, _unlink_quietly, final))
            raise
        received.placed = True
        return final

    async def remove(self, owner_id: UUID, media_id: UUID) -> bool:
        """Remove a stored file; False when it was already gone."""
        path = self.path_for(owner_id, media_id)
        loop = asyncio.get_running_loop()
        return await settled(loop.run_in_executor(None, _unlink_quietly, path))

    async def remove_path(self, path: Path) -> bool:
        """Remove a file found by a scan (it must lie inside the root)."""
        if ".." in path.parts or not path.is_relative_to(self.root) or path == self.root:
            raise StoragePathError("refusing to remove a path outside the storage root")
        loop = asyncio.get_running_loop()
        return await settled(loop.run_in_executor(None, _unlink_quietly, path))

    # --- scanning (blocking; run in an executor) -------------------------------------

    def stale_temps(self, max_age_seconds: float, now: float | None = None) -> list[Path]:
        now = time.time() if now is None else now
        stale = []
        with contextlib.suppress(FileNotFoundError), os.scandir(self.temp_dir) as entries:
            for entry in entries:
                if not entry.name.endswith(TEMP_SUFFIX):
                    continue
                try:
                    info = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if now - info.st_mtime > max_age_seconds:
                    stale.append(Path(entry.path))
        return stale

    def scan(self) -> Scan:
        """Every stored file, and anything in the owner area that should not be there."""
        result = Scan()
        with os.scandir(self.root) as top:
            for owner_entry in top:
                if owner_entry.name.startswith("."):
                    continue
                owner_id = _uuid_name(owner_entry.name)
                if owner_id is None or not owner_entry.is_dir(follow_symlinks=False):
                    self._stray(result, owner_entry)
                    continue
                with os.scandir(owner_entry.path) as files:
                    for entry in files:
                        media_id = _uuid_name(entry.name)
                        if media_id is None or not entry.is_file(follow_symlinks=False):
                            self._stray(result, entry)
                            continue
                        try:
                            info = entry.stat(follow_symlinks=False)
                        except FileNotFoundError:
                            continue
                        result.files.append(StoredFile(owner_id, media_id, Path(entry.path),
                                                       info.st_size, info.st_mtime))
        return result

    @staticmethod
    def _stray(result: Scan, entry: os.DirEntry[str]) -> None:
        try:
            info = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            return
        result.strays.append(Stray(Path(entry.path), stat.S_ISREG(info.st_mode),
                                   info.st_mtime))


def file_sha256(path: Path) -> str:
    """SHA-256 of a whole file, read in bounded chunks (blocking)."""
    hasher = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1024 * 1024):
            hasher.update(chunk)
    return hasher.hexdigest()
