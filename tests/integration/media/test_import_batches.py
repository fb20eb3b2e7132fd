"""Import entries in bulk: activity files committed in batches (rows and files together,
duplicates left out, nothing half-done when a batch fails or its caller is cancelled), and
large entries streaming only a few at a time."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import uuid
import zipfile
from collections.abc import AsyncIterator

import pytest
from import_support import (
    CommitFailed,
    clean_import_tables,  # noqa: F401 - a fixture, used through pytestmark
    fail_after_placing,
    one_chunk,
    start_import,
    summary_counts,
    temp_files,
    wait_for,
)

from services.media.imports import store as db
from services.media.imports.commits import ActivityCommits
from services.media.imports.files import ImportFiles
from services.media.imports.job import LARGE_ENTRIES_AT_ONCE
from services.media.keys import STORAGE
from services.media.storage import WRITE_BATCH_BYTES, MediaStorage, Received
from shared.keys import DB_POOL
from tests.media_archives import Row, activities_csv, noise_jpeg, zip_bytes

pytestmark = pytest.mark.usefixtures("clean_import_tables")


def activity_row(owner_id: uuid.UUID, data: bytes, strava_id: str) -> db.ActivityFileRow:
    return db.ActivityFileRow(
        id=uuid.uuid4(), owner_id=owner_id, strava_id=strava_id, import_id=None,
        started_at=None, name="Morning run", activity_type="Run", distance_meters=1000.0,
        elapsed_seconds=300, file_format="gpx", filename=f"{strava_id}.gpx",
        size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest())


async def commit_one(commits: ActivityCommits, files: ImportFiles, storage: MediaStorage,
                     owner_id: uuid.UUID, data: bytes, strava_id: str
                     ) -> tuple[db.ActivityFileRow, bool]:
    row = activity_row(owner_id, data, strava_id)
    async with storage.receive(one_chunk(data), max_bytes=10 ** 6) as received:
        inserted = await commits.commit(row, received, files.activity_path(owner_id, row.id))
    return row, inserted


async def stored(api, owner_id: uuid.UUID) -> tuple[set[uuid.UUID], set[str]]:
    async with api.app[DB_POOL].acquire() as connection:
        ids = {row["id"] for row in await connection.fetch(
            "SELECT id FROM media.activities WHERE owner_id = $1", owner_id)}
    folder = api.root / ".activities" / str(owner_id)
    names = {path.name for path in folder.iterdir()} if folder.is_dir() else set()
    return ids, names


async def test_concurrent_entries_commit_rows_and_files_together(api) -> None:
    storage = api.app[STORAGE]
    files = ImportFiles(storage)
    commits = ActivityCommits(api.app[DB_POOL], files)
    owner_id = uuid.uuid4()
    bodies = [f"<gpx>{index}</gpx>".encode() for index in range(12)]
    results = await asyncio.gather(*(
        commit_one(commits, files, storage, owner_id, body, str(1000 + index))
        for index, body in enumerate(bodies)))
    assert all(inserted for _, inserted in results)
    ids, names = await stored(api, owner_id)
    assert ids == {row.id for row, _ in results}
    assert names == {str(row.id) for row, _ in results}
    for row, _ in results:
        path = files.activity_path(owner_id, row.id)
        assert hashlib.sha256(path.read_bytes()).hexdigest() == row.sha256
    assert temp_files(storage) == []


async def test_duplicates_in_a_batch_are_left_out_without_failing_the_others(api) -> None:
    storage = api.app[STORAGE]
    files = ImportFiles(storage)
    commits = ActivityCommits(api.app[DB_POOL], files)
    owner_id = uuid.uuid4()
    first, inserted = await commit_one(commits, files, storage, owner_id, b"<gpx>a</gpx>", "1")
    assert inserted
    results = await asyncio.gather(
        # The same bytes under another Strava id, another file under the same Strava id,
        # and a new activity.
        commit_one(commits, files, storage, owner_id, b"<gpx>a</gpx>", "2"),
        commit_one(commits, files, storage, owner_id, b"<gpx>b</gpx>", "1"),
        commit_one(commits, files, storage, owner_id, b"<gpx>c</gpx>", "3"))
    assert [inserted for _, inserted in results] == [False, False, True]
    ids, names = await stored(api, owner_id)
    assert ids == {first.id, results[2][0].id}
    assert names == {str(first.id), str(results[2][0].id)}
    assert temp_files(storage) == []


async def test_a_batch_whose_commit_fails_leaves_no_file_and_no_row(api, monkeypatch) -> None:
    storage = api.app[STORAGE]
    files = ImportFiles(storage)
    commits = ActivityCommits(api.app[DB_POOL], files)
    owner_id = uuid.uuid4()
    fail_after_placing(monkeypatch)
    outcomes = await asyncio.gather(*(
        commit_one(commits, files, storage, owner_id, f"<gpx>{index}</gpx>".encode(),
                   str(index + 1))
        for index in range(5)), return_exceptions=True)
    assert all(isinstance(outcome, CommitFailed) for outcome in outcomes)
    assert await stored(api, owner_id) == (set(), set())
    assert temp_files(storage) == []


async def test_a_cancelled_entry_still_completes_its_batch_and_leaves_rows_and_files_agreeing(
        api, monkeypatch) -> None:
    storage = api.app[STORAGE]
    files = ImportFiles(storage)
    commits = ActivityCommits(api.app[DB_POOL], files)
    owner_id = uuid.uuid4()
    real_place_all = ImportFiles.place_all
    placing = asyncio.Event()
    go_on = asyncio.Event()

    async def paused_place_all(self, moves) -> None:
        placing.set()
        await go_on.wait()
        await real_place_all(self, moves)

    monkeypatch.setattr(ImportFiles, "place_all", paused_place_all)
    data = b"<gpx>cancelled</gpx>"
    row = activity_row(owner_id, data, "42")
    received_seen: list[Received] = []

    async def entry() -> None:
        async with storage.receive(one_chunk(data), max_bytes=10 ** 6) as received:
            received_seen.append(received)
            await commits.commit(row, received, files.activity_path(owner_id, row.id))

    task = asyncio.create_task(entry())
    await placing.wait()
    task.cancel()
    await asyncio.sleep(0)
    # The entry waits for its batch rather than removing a file the batch is moving.
    assert not task.done()
    go_on.set()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert task.cancelled()
    ids, names = await stored(api, owner_id)
    # The batch committed: its row names a file that is there, complete.
    assert ids == {row.id}
    assert names == {str(row.id)}
    assert files.activity_path(owner_id, row.id).read_bytes() == data
    assert received_seen[0].placed
    assert temp_files(storage) == []


async def test_large_entries_stream_a_few_at_a_time(api, monkeypatch) -> None:
    """Memory stays flat for an archive of large photos: each large entry holds up to two
    write batches while it streams, so only a few stream at once."""
    photos = [noise_jpeg((1200, 1200), seed=seed) for seed in range(6)]
    assert all(len(photo) > WRITE_BATCH_BYTES for photo in photos)
    table = [Row(str(500 + index), media=[f"media/{index}.jpg"]) for index in range(6)]
    archive = zip_bytes([("activities.csv", activities_csv(table)),
                         *((f"media/{index}.jpg", photo) for index, photo in enumerate(photos))],
                        compression=zipfile.ZIP_STORED)
    real_receive = MediaStorage.receive
    streaming = {"now": 0, "most": 0}

    @contextlib.asynccontextmanager
    async def counted_receive(self, chunks, **kwargs) -> AsyncIterator[Received]:
        streaming["now"] += 1
        streaming["most"] = max(streaming["most"], streaming["now"])
        try:
            async with real_receive(self, chunks, **kwargs) as received:
                yield received
        finally:
            streaming["now"] -= 1

    monkeypatch.setattr(MediaStorage, "receive", counted_receive)
    import_id = await start_import(api, archive)
    state = await wait_for(api, import_id)
    assert state["status"] == "done", state
    assert summary_counts(state)["mediaImported"] == len(photos)
    assert 1 <= streaming["most"] <= LARGE_ENTRIES_AT_ONCE
