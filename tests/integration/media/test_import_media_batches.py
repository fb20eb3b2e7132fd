"""An import's photos committed in batches: rows and files together, duplicates and
refusals left out one by one, nothing half-done when a batch fails or its caller is
cancelled."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import uuid
from collections.abc import AsyncIterator

import pytest
from import_support import (
    CommitFailed,
    clean_import_tables,  # noqa: F401 - a fixture, used through pytestmark
    fail_after_placing,
    import_done,
    one_chunk,
    summary_counts,
    temp_files,
)

from services.media import ingest, store
from services.media.imports.commits import MediaCommits
from services.media.imports.files import ImportFiles
from services.media.ingest import DuplicateMediaError, QuotaExceededError
from services.media.keys import STORAGE
from services.media.storage import MediaStorage
from shared.keys import DB_POOL
from tests.media_archives import HTML_PAGE, Row, activities_csv, jpeg, zip_bytes

pytestmark = pytest.mark.usefixtures("clean_import_tables")


def photo(index: int) -> bytes:
    return jpeg((index * 7 % 256, index * 13 % 256, 90))


def media_row(owner_id: uuid.UUID, data: bytes) -> store.NewMedia:
    return store.NewMedia(
        id=uuid.uuid4(), owner_id=owner_id, filename="photo.jpg", mime_type="image/jpeg",
        size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest(), workout_id=None,
        caption=None, width=16, height=12)


def media_commits(api, quota_bytes: int | None = None) -> MediaCommits:
    storage = api.app[STORAGE]
    return MediaCommits(api.app[DB_POOL], ImportFiles(storage), storage, quota_bytes)


async def commit_together(commits: MediaCommits, storage: MediaStorage,
                          rows: list[tuple[store.NewMedia, bytes]]
                          ) -> list[store.MediaItem | BaseException]:
    """Receive every file first, then hand them all over at once: one batch."""
    async with contextlib.AsyncExitStack() as stack:
        received = [await stack.enter_async_context(
            storage.receive(one_chunk(data), max_bytes=10 ** 6)) for _, data in rows]
        return await asyncio.gather(*(
            commits.commit_media(file, row, True)
            for file, (row, _) in zip(received, rows, strict=True)),
            return_exceptions=True)


async def stored(api, owner_id: uuid.UUID) -> tuple[set[uuid.UUID], set[str]]:
    async with api.app[DB_POOL].acquire() as connection:
        ids = {row["id"] for row in await connection.fetch(
            "SELECT id FROM media.media WHERE owner_id = $1", owner_id)}
    folder = api.root / str(owner_id)
    names = {path.name for path in folder.iterdir()} if folder.is_dir() else set()
    return ids, names


@pytest.fixture
async def owner_id(api) -> AsyncIterator[uuid.UUID]:
    """An owner of the test's own; its rows go with the test, as its files do."""
    owner = uuid.uuid4()
    yield owner
    async with api.app[DB_POOL].acquire() as connection:
        await connection.execute("DELETE FROM media.media WHERE owner_id = $1", owner)


@pytest.fixture
def place_all_calls(monkeypatch) -> list[int]:
    """How many files each rename pass moved."""
    calls: list[int] = []
    real_place_all = ImportFiles.place_all

    async def counted(self, moves) -> None:
        calls.append(len(moves))
        await real_place_all(self, moves)

    monkeypatch.setattr(ImportFiles, "place_all", counted)
    return calls


async def test_photos_received_together_commit_as_one_batch(api, owner_id,
                                                            place_all_calls) -> None:
    storage = api.app[STORAGE]
    rows = [(media_row(owner_id, photo(index)), photo(index)) for index in range(12)]
    outcomes = await commit_together(media_commits(api), storage, rows)
    assert [item.id for item in outcomes] == [row.id for row, _ in rows]
    # One rename pass (one transaction) for all twelve, not one each.
    assert place_all_calls == [12]
    ids, names = await stored(api, owner_id)
    assert ids == {row.id for row, _ in rows}
    assert names == {str(row.id) for row, _ in rows}
    for row, data in rows:
        assert storage.path_for(owner_id, row.id).read_bytes() == data
    assert temp_files(storage) == []


async def test_a_duplicate_photo_is_left_out_without_failing_its_batch(
        api, owner_id, place_all_calls) -> None:
    storage = api.app[STORAGE]
    commits = media_commits(api)
    first_row = media_row(owner_id, photo(1))
    (first,) = await commit_together(commits, storage, [(first_row, photo(1))])
    assert isinstance(first, store.MediaItem)
    # The bytes already stored, a new photo, and that new photo twice in the same batch.
    batch = [(media_row(owner_id, photo(1)), photo(1)), (media_row(owner_id, photo(2)), photo(2)),
             (media_row(owner_id, photo(2)), photo(2))]
    again, new, copy = await commit_together(commits, storage, batch)
    assert isinstance(again, DuplicateMediaError)
    assert again.existing.id == first.id
    assert isinstance(new, store.MediaItem)
    assert isinstance(copy, DuplicateMediaError)
    assert copy.existing.id == new.id
    assert place_all_calls == [1, 1]
    ids, names = await stored(api, owner_id)
    assert ids == {first.id, new.id}
    assert names == {str(first.id), str(new.id)}
    assert temp_files(storage) == []


async def test_a_photo_over_the_quota_is_refused_alone_in_its_batch(api, owner_id) -> None:
    storage = api.app[STORAGE]
    rows = [(media_row(owner_id, photo(index)), photo(index)) for index in range(3)]
    # Room for the first and the third, not for the second after the first.
    sizes = [len(data) for _, data in rows]
    quota = sizes[0] + max(sizes[1], sizes[2]) - 1
    assert sizes[0] + sizes[2] <= quota < sizes[0] + sizes[1]
    outcomes = await commit_together(media_commits(api, quota_bytes=quota), storage, rows)
    assert isinstance(outcomes[0], store.MediaItem)
    assert isinstance(outcomes[1], QuotaExceededError)
    assert isinstance(outcomes[2], store.MediaItem)
    ids, names = await stored(api, owner_id)
    assert ids == {rows[0][0].id, rows[2][0].id}
    assert names == {str(rows[0][0].id), str(rows[2][0].id)}
    assert temp_files(storage) == []


async def test_a_photo_batch_whose_commit_fails_leaves_no_file_and_no_row(
        api, owner_id, monkeypatch) -> None:
    storage = api.app[STORAGE]
    fail_after_placing(monkeypatch)
    rows = [(media_row(owner_id, photo(index)), photo(index)) for index in range(5)]
    outcomes = await commit_together(media_commits(api), storage, rows)
    assert all(isinstance(outcome, CommitFailed) for outcome in outcomes)
    assert await stored(api, owner_id) == (set(), set())
    assert temp_files(storage) == []


async def test_a_photo_batch_that_committed_keeps_its_files_when_the_connection_fails_after(
        api, owner_id) -> None:
    storage = api.app[STORAGE]
    pool = api.app[DB_POOL]

    class ReleaseFailed(Exception):
        pass

    class FailingRelease:
        """A pool whose connections fail on the way back, after the commit."""

        @contextlib.asynccontextmanager
        async def acquire(self) -> AsyncIterator[object]:
            async with pool.acquire() as connection:
                yield connection
            raise ReleaseFailed()

    commits = MediaCommits(FailingRelease(), ImportFiles(storage), storage, None)
    rows = [(media_row(owner_id, photo(index)), photo(index)) for index in range(3)]
    outcomes = await commit_together(commits, storage, rows)
    assert all(isinstance(outcome, ReleaseFailed) for outcome in outcomes)
    # The rows committed, so the files they name are all there.
    ids, names = await stored(api, owner_id)
    assert ids == {row.id for row, _ in rows}
    assert names == {str(row.id) for row, _ in rows}
    assert temp_files(storage) == []


async def test_a_cancelled_photo_waits_for_its_batch_and_its_item_is_removed(
        api, owner_id, monkeypatch) -> None:
    storage = api.app[STORAGE]
    commits = media_commits(api)
    real_place_all = ImportFiles.place_all
    placing = asyncio.Event()
    go_on = asyncio.Event()

    moved: list[int] = []

    async def paused_place_all(self, moves) -> None:
        placing.set()
        await go_on.wait()
        await real_place_all(self, moves)
        moved.append(len(moves))

    monkeypatch.setattr(ImportFiles, "place_all", paused_place_all)
    data = photo(3)
    row = media_row(owner_id, data)

    async def entry() -> None:
        async with storage.receive(one_chunk(data), max_bytes=10 ** 6) as received:
            await commits.commit_media(received, row, True)

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
    # The batch moved the file it was given: the temporary file was still there.
    assert moved == [1]
    # As for a single upload, the caller never learned of the item, so it is gone again.
    assert await stored(api, owner_id) == (set(), set())
    assert temp_files(storage) == []


async def test_an_import_commits_its_photos_in_batches_and_reports_a_bad_one_alone(
        api, owner_id, monkeypatch) -> None:
    def one_at_a_time(*_args, **_kwargs):
        raise AssertionError("an import's photo took the one-item commit")

    monkeypatch.setattr(ingest, "_commit_or_nothing", one_at_a_time)
    photos = [photo(index) for index in range(10)]
    table = [Row(str(700 + index), media=[f"media/{index}.jpg"]) for index in range(10)]
    entries = [(f"media/{index}.jpg", data) for index, data in enumerate(photos)]
    # The sixth photo is a web page named .jpg.
    entries[5] = ("media/5.jpg", HTML_PAGE)
    state = await import_done(api, zip_bytes([("activities.csv", activities_csv(table)),
                                              *entries]))
    counts = summary_counts(state)
    assert counts["mediaImported"] == 9
    assert counts["invalid"] == 1
    assert counts["duplicate"] == 0
    errors = state["summary"]["errors"]
    assert [error["entry"] for error in errors] == ["media/5.jpg"]
    assert errors[0]["code"] == "unsupported_type"
    assert state["progress"]["entriesDone"] == state["progress"]["entriesTotal"]
    async with api.app[DB_POOL].acquire() as connection:
        rows = await connection.fetch(
            "SELECT m.id, m.sha256 FROM media.media m JOIN media.import_media i"
            " ON i.media_id = m.id WHERE i.import_id = $1", uuid.UUID(state["id"]))
    assert sorted(row["sha256"] for row in rows) == sorted(
        hashlib.sha256(data).hexdigest() for index, data in enumerate(photos) if index != 5)
    for row in rows:
        path = next(api.root.glob(f"*/{row['id']}"))
        assert hashlib.sha256(path.read_bytes()).hexdigest() == row["sha256"]
    assert temp_files(api.app[STORAGE]) == []
