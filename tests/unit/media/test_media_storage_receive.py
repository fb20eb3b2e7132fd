"""Receiving a stream into a temporary file: every byte in order, the size limit at the exact
byte, and nothing left behind when a batch is still being written as the request ends."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.media import storage as storage_module
from services.media.storage import (
    WRITE_BATCH_BYTES,
    WRITE_BATCH_CHUNKS,
    MediaStorage,
    SizeLimitExceededError,
)


@pytest.fixture
def storage(tmp_path: Path) -> MediaStorage:
    storage = MediaStorage(tmp_path / "root")
    storage.prepare()
    return storage


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def stream(chunks: list[bytes], pulled: list[int] | None = None) -> AsyncIterator[bytes]:
    for chunk in chunks:
        if pulled is not None:
            pulled.append(len(chunk))
        yield chunk


def varied_chunks() -> list[bytes]:
    # Large chunks that fill a batch at once, many tiny ones that fill it by count, and
    # sizes that straddle a batch boundary.
    sizes = [WRITE_BATCH_BYTES + 7, 3, 1] + [5] * (WRITE_BATCH_CHUNKS + 10) \
        + [WRITE_BATCH_BYTES // 2 + 1] * 3 + [1]
    return [bytes([index % 251]) * size for index, size in enumerate(sizes)]


async def test_receive_writes_every_byte_in_order_and_hashes_them(storage):
    chunks = varied_chunks()
    expected = b"".join(chunks)
    heads: list[bytes] = []
    async with storage.receive(stream(chunks), max_bytes=len(expected),
                               on_head=heads.append, head_size=16) as received:
        assert received.path.read_bytes() == expected
        assert received.size == len(expected)
        assert received.sha256 == hashlib.sha256(expected).hexdigest()
        assert received.head == expected[:16]
        assert heads == [expected[:16]]
    assert list(storage.temp_dir.iterdir()) == []


async def test_receive_accepts_a_stream_of_exactly_the_limit(storage):
    chunks = varied_chunks()
    total = sum(map(len, chunks))
    async with storage.receive(stream(chunks), max_bytes=total) as received:
        assert received.size == total


async def test_size_limit_stops_the_read_at_the_first_byte_over_and_leaves_no_file(storage):
    # A batch is in flight when the byte over the limit arrives.
    chunks = [b"a" * WRITE_BATCH_BYTES, b"b" * 100, b"c", b"never read"]
    limit = WRITE_BATCH_BYTES + 100
    pulled: list[int] = []
    fds = open_fds()
    with pytest.raises(SizeLimitExceededError) as refused:
        async with storage.receive(stream(chunks, pulled), max_bytes=limit):
            pytest.fail("an oversized stream must not be yielded")
    assert refused.value.limit == limit
    assert pulled == [WRITE_BATCH_BYTES, 100, 1]
    assert list(storage.temp_dir.iterdir()) == []
    assert open_fds() == fds


async def test_an_error_raised_by_the_head_check_leaves_no_file(storage):
    class Refused(Exception):
        pass

    def refuse(_head: bytes) -> None:
        raise Refused()

    chunks = [b"x" * WRITE_BATCH_BYTES, b"y" * 10]
    fds = open_fds()
    with pytest.raises(Refused):
        async with storage.receive(stream(chunks), max_bytes=10 ** 9, on_head=refuse,
                                   head_size=WRITE_BATCH_BYTES + 5):
            pytest.fail("a refused stream must not be yielded")
    assert list(storage.temp_dir.iterdir()) == []
    assert open_fds() == fds


async def test_failed_write_is_raised_and_leaves_no_file(storage, monkeypatch):
    def disk_full(*_args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(storage_module, "_absorb", disk_full)
    fds = open_fds()
    with pytest.raises(OSError, match="No space") as failed:
        async with storage.receive(stream([b"z" * WRITE_BATCH_BYTES] * 3), max_bytes=10 ** 9):
            pytest.fail("a stream that could not be written must not be yielded")
    assert failed.value.errno == errno.ENOSPC
    assert list(storage.temp_dir.iterdir()) == []
    assert open_fds() == fds


async def test_cancelled_upload_with_a_write_in_flight_leaves_no_file_and_no_fd(storage,
                                                                                 monkeypatch):
    real_absorb = storage_module._absorb
    started = threading.Event()
    release = threading.Event()
    seen_by_the_write: dict[str, object] = {}

    def slow_absorb(fd: int, hasher: object, chunks: list[bytes]) -> None:
        started.set()
        release.wait()
        # The request has been cancelled by now; the descriptor and the file must still
        # be there for the write that is under way.
        seen_by_the_write["files"] = list(storage.temp_dir.iterdir())
        try:
            real_absorb(fd, hasher, chunks)  # type: ignore[arg-type]
        except OSError as exc:
            seen_by_the_write["error"] = exc

    monkeypatch.setattr(storage_module, "_absorb", slow_absorb)
    client_gone = asyncio.Event()

    async def stalled_client() -> AsyncIterator[bytes]:
        yield b"p" * WRITE_BATCH_BYTES
        await client_gone.wait()
        yield b"never"

    async def upload() -> None:
        async with storage.receive(stalled_client(), max_bytes=10 ** 9):
            pytest.fail("a cancelled upload must not be yielded")

    fds = open_fds()
    task = asyncio.create_task(upload())
    await asyncio.to_thread(started.wait)
    task.cancel()
    # The cancelled request now waits for the write; let it finish.
    await asyncio.sleep(0)
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(seen_by_the_write["files"]) == 1  # type: ignore[arg-type]
    assert "error" not in seen_by_the_write
    assert list(storage.temp_dir.iterdir()) == []
    assert open_fds() == fds
