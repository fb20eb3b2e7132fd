"""``ingest_media`` used directly, the way the archive import feeds it entries."""

from __future__ import annotations

import asyncio
import hashlib
import tracemalloc
import uuid

import pytest
from media_samples import HTML, jpeg, mp4, png

from services.media.ingest import DuplicateMediaError, QuotaExceededError, UploadLimits
from services.media.keys import INGESTOR
from services.media.storage import SizeLimitExceededError
from shared.errors import UnsupportedMediaTypeError, ValidationError
from shared.keys import DB_POOL


class Source:
    """An async chunk source that records how far it was read."""

    def __init__(self, data: bytes, chunk: int = 1000, then_forever: bool = False,
                 fail_after: int | None = None) -> None:
        self.data = data
        self.chunk = chunk
        self.then_forever = then_forever
        self.fail_after = fail_after
        self.bytes_read = 0
        self.started = False

    async def __aiter__(self):
        self.started = True
        for offset in range(0, len(self.data), self.chunk):
            if self.fail_after is not None and self.bytes_read >= self.fail_after:
                raise OSError("the archive entry is truncated")
            piece = self.data[offset:offset + self.chunk]
            self.bytes_read += len(piece)
            yield piece
            await asyncio.sleep(0)
        while self.then_forever:
            self.bytes_read += self.chunk
            yield bytes(self.chunk)
            await asyncio.sleep(0)


async def test_ingest_from_an_async_source_stores_the_item(api):
    data = mp4()
    item = await api.app[INGESTOR].ingest(Source(data, chunk=7), filename="media/clip.mp4",
                                          owner_id=uuid.UUID(api.user_id),
                                          workout_id="strava:42", declared_type="video/mp4")
    assert item.filename == "clip.mp4"
    assert item.workout_id == "strava:42"
    assert item.sha256 == hashlib.sha256(data).hexdigest()
    assert (api.root / api.user_id / str(item.id)).read_bytes() == data
    listed = await (await api.get("/media?workoutId=strava:42")).json()
    assert [i["id"] for i in listed["items"]] == [str(item.id)]


async def test_declared_size_over_the_limit_is_refused_before_reading(make_api, unchanged):
    api = await make_api(MediaStorage__MaxFileSizeBytes="1000")
    source = Source(jpeg())
    async with unchanged(api):
        with pytest.raises(SizeLimitExceededError):
            await api.app[INGESTOR].ingest(source, filename="a.jpg",
                                           owner_id=uuid.UUID(api.user_id), declared_size=1001)
    assert not source.started


async def test_the_byte_after_the_limit_stops_the_read(make_api, unchanged):
    api = await make_api(MediaStorage__MaxFileSizeBytes="5000")
    source = Source(jpeg(), chunk=1, then_forever=True)
    async with unchanged(api):
        with pytest.raises(SizeLimitExceededError):
            await api.app[INGESTOR].ingest(source, filename="a.jpg",
                                           owner_id=uuid.UUID(api.user_id))
    assert source.bytes_read == 5001


async def test_content_check_stops_the_read_after_the_first_bytes(api, unchanged):
    source = Source(HTML + bytes(20_000), chunk=1024, then_forever=True)
    async with unchanged(api):
        with pytest.raises(UnsupportedMediaTypeError):
            await api.app[INGESTOR].ingest(source, filename="a.jpg",
                                           owner_id=uuid.UUID(api.user_id))
    assert source.bytes_read <= 8192 + 1024


async def test_a_failing_source_leaves_nothing(api, unchanged):
    source = Source(jpeg((300, 300)), chunk=512, fail_after=2048)
    async with unchanged(api):
        with pytest.raises(OSError, match="truncated"):
            await api.app[INGESTOR].ingest(source, filename="a.jpg",
                                           owner_id=uuid.UUID(api.user_id))


async def test_cancelling_an_ingest_mid_stream_leaves_nothing(api, unchanged):
    """What happens to an upload in flight when the service stops: its task is cancelled."""
    started = asyncio.Event()

    async def slow():
        yield jpeg()
        started.set()
        while True:
            yield bytes(4096)
            await asyncio.sleep(0.01)

    async with unchanged(api):
        task = asyncio.create_task(api.app[INGESTOR].ingest(
            slow(), filename="a.jpg", owner_id=uuid.UUID(api.user_id)))
        await started.wait()
        await asyncio.sleep(0.05)
        assert list((api.root / ".tmp").iterdir())
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_deduplicate_returns_the_existing_item_instead_of_storing_again(api, unchanged):
    data = png((5, 5))
    first = await api.app[INGESTOR].ingest(Source(data), filename="a.png",
                                           owner_id=uuid.UUID(api.user_id), deduplicate=True)
    async with unchanged(api):
        with pytest.raises(DuplicateMediaError) as caught:
            await api.app[INGESTOR].ingest(Source(data), filename="again.png",
                                           owner_id=uuid.UUID(api.user_id), deduplicate=True)
    assert caught.value.existing.id == first.id
    # Another owner's identical bytes are theirs to keep.
    other = await api.app[INGESTOR].ingest(Source(data), filename="a.png",
                                           owner_id=uuid.uuid4(), deduplicate=True)
    assert other.id != first.id


async def test_bad_metadata_is_refused_before_reading(api, unchanged):
    for kwargs in ({"workout_id": "../../x"}, {"caption": "x" * 2001}, {"filename": "../"}):
        source = Source(jpeg())
        arguments = {"filename": "a.jpg", **kwargs}
        async with unchanged(api):
            with pytest.raises(ValidationError):
                await api.app[INGESTOR].ingest(source, owner_id=uuid.UUID(api.user_id),
                                               **arguments)
        assert not source.started


async def test_declared_size_over_the_quota_is_refused_before_reading(make_api, unchanged):
    api = await make_api(MediaStorage__QuotaBytes="100")
    source = Source(jpeg())
    async with unchanged(api):
        with pytest.raises(QuotaExceededError):
            await api.app[INGESTOR].ingest(source, filename="a.jpg",
                                           owner_id=uuid.UUID(api.user_id), declared_size=101)
    assert not source.started


def test_upload_limits_come_from_settings(media_env):
    from services.media.settings import load_settings

    limits = UploadLimits.from_settings(load_settings(
        {**media_env, "MediaStorage__QuotaBytes": "9"}).storage)
    assert limits == UploadLimits(52_428_800, 9)


async def test_memory_stays_bounded_by_the_chunk_size(api):
    chunk = 256 * 1024
    head = jpeg()

    async def large():
        yield head
        block = bytes(chunk)
        for _ in range(64):  # 16 MiB
            yield block

    tracemalloc.start()
    try:
        item = await api.app[INGESTOR].ingest(large(), filename="big.jpg",
                                              owner_id=uuid.UUID(api.user_id))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert item.size_bytes == len(head) + 64 * chunk
    assert peak < 4 * 1024 * 1024, f"peak {peak} bytes while streaming 16 MiB"


async def test_cancelling_during_the_commit_leaves_nothing(api, unchanged):
    """Cancelled while the row is being written: the commit runs to its end and the item it
    produced is removed again, because nobody will ever be told about it."""
    async with api.app[DB_POOL].acquire() as connection:
        await connection.execute("""
            CREATE OR REPLACE FUNCTION media.test_slow_row() RETURNS trigger
            LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(0.4); RETURN NEW; END $$;
            CREATE TRIGGER test_slow_insert BEFORE INSERT ON media.media FOR EACH ROW
                WHEN (NEW.filename LIKE 'slow%') EXECUTE FUNCTION media.test_slow_row();
        """)
    try:
        async with unchanged(api):
            task = asyncio.create_task(api.app[INGESTOR].ingest(
                Source(jpeg()), filename="slow.jpg", owner_id=uuid.UUID(api.user_id)))

            async def inserting() -> bool:
                async with api.app[DB_POOL].acquire() as connection:
                    return bool(await connection.fetchval(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE query LIKE 'INSERT INTO media.media%' AND state = 'active'"))

            deadline = asyncio.get_running_loop().time() + 5
            while not await inserting():
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    finally:
        async with api.app[DB_POOL].acquire() as connection:
            await connection.execute("DROP TRIGGER test_slow_insert ON media.media;"
                                     " DROP FUNCTION media.test_slow_row();")


async def test_outcomes_are_counted_for_monitoring(api):
    from prometheus_client import REGISTRY

    def count(outcome: str) -> float:
        return REGISTRY.get_sample_value("tempo_media_ingested_total",
                                         {"outcome": outcome}) or 0.0

    stored, refused = count("stored"), count("unsupported_type")
    await api.upload_ok("a.png", png())
    await api.upload("b.jpg", HTML)
    assert count("stored") == stored + 1
    assert count("unsupported_type") == refused + 1
