"""An import's received files committed in batches: activity files and media alike.

The entries whose files finished receiving while the previous batch was committing go in
together: one transaction, one statement, one rename pass with one directory fsync, one
commit, instead of one of each per entry.

Each file is fsynced before it is handed over, and a batch's rows commit only after its
renames are durable, so a crash never leaves a row naming a missing or partial file;
files renamed by a batch whose commit did not happen are removed again, or found by the
consistency check.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Generic, TypeVar
from uuid import UUID

import asyncpg

from services.media import store
from services.media.imports import store as db
from services.media.imports.files import ImportFiles
from services.media.ingest import commit_media_rows, delete_media
from services.media.storage import MediaStorage, Received, settled
from shared.errors import ServiceError

# Entries committed together at most; bounds one transaction and one statement.
COMMIT_BATCH_MAX = 64

RowT = TypeVar("RowT")
ResultT = TypeVar("ResultT")


class CommitBatches(Generic[RowT, ResultT]):
    """Rows and their received files, committed in batches.

    Subclasses say how a batch's rows are inserted (``_insert``: one outcome per row) and
    which outcomes put their file in place (``_keeps``).
    """

    def __init__(self, pool: asyncpg.Pool, files: ImportFiles,
                 max_batch: int = COMMIT_BATCH_MAX) -> None:
        self.pool = pool
        self.files = files
        self.max_batch = max_batch
        self._queue: list[tuple[RowT, Received, Path, asyncio.Future[ResultT]]] = []
        self._flushing: asyncio.Task[None] | None = None

    async def _insert(self, connection: asyncpg.Connection,
                      rows: list[RowT]) -> list[ResultT]:
        raise NotImplementedError

    def _keeps(self, outcome: ResultT) -> bool:
        raise NotImplementedError

    async def _abandoned(self, outcome: ResultT) -> None:
        """Called when the caller was cancelled after its row committed."""

    async def commit(self, row: RowT, received: Received, final: Path) -> ResultT:
        """Insert ``row`` and, if its outcome keeps it, move its file to ``final``.

        Runs to its end even if the caller is cancelled: the file must not be removed
        while its batch may still rename it.
        """
        outcome: asyncio.Future[ResultT] = asyncio.get_running_loop().create_future()
        self._queue.append((row, received, final, outcome))
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush())
        try:
            return await settled(outcome)
        except asyncio.CancelledError:
            if outcome.done() and not outcome.cancelled() and outcome.exception() is None:
                await settled(self._abandoned(outcome.result()))
            raise

    async def _flush(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[:self.max_batch], self._queue[self.max_batch:]
            try:
                outcomes = await self._commit_batch(batch)
            except BaseException as exc:
                for *_, future in batch:
                    if future.done():
                        continue
                    if isinstance(exc, asyncio.CancelledError):
                        future.cancel()
                    else:
                        future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            for (*_, future), outcome in zip(batch, outcomes, strict=True):
                if not future.done():
                    future.set_result(outcome)

    async def _commit_batch(self, batch: list[tuple[RowT, Received, Path,
                                                    asyncio.Future[ResultT]]]
                            ) -> list[ResultT]:
        placed: list[Path] = []
        committed = False
        try:
            async with self.pool.acquire() as connection:
                async with connection.transaction():
                    outcomes = await self._insert(connection, [row for row, *_ in batch])
                    moves = [(received, final) for (_, received, final, _), outcome
                             in zip(batch, outcomes, strict=True) if self._keeps(outcome)]
                    # Listed before the move: whatever of it happened is undone on failure.
                    placed = [final for _, final in moves]
                    await self.files.place_all(moves)
                # A failure from here on (handing the connection back) leaves the rows
                # committed, so their files must stay.
                committed = True
        except BaseException:
            if placed and not committed:
                # The rows did not commit, so the files they would have named must go.
                await self.files.remove_all(placed)
                for _, received, _, _ in batch:
                    received.placed = False
            raise
        return outcomes


class ActivityCommits(CommitBatches[db.ActivityFileRow, bool]):
    """Activity files; an outcome is False for a duplicate (the unique indexes on Strava
    id and SHA-256 decide). A commit that happened is kept even if its caller was
    cancelled: the row carries the import's id, so a resumed import finds it."""

    async def _insert(self, connection: asyncpg.Connection,
                      rows: list[db.ActivityFileRow]) -> list[bool]:
        inserted = await db.insert_activity_files(connection, rows)
        return [row.id in inserted for row in rows]

    def _keeps(self, outcome: bool) -> bool:
        return outcome


MediaOutcome = store.MediaItem | ServiceError


class MediaCommits(CommitBatches[tuple[store.NewMedia, bool], MediaOutcome]):
    """Media files, as ``ingest_media``'s ``commit``; an outcome is the stored item or a
    refusal of that entry alone (quota, duplicate). An item whose caller was cancelled
    is removed again, as a single upload's would be: the caller never learns of it."""

    def __init__(self, pool: asyncpg.Pool, files: ImportFiles, storage: MediaStorage,
                 quota_bytes: int | None, max_batch: int = COMMIT_BATCH_MAX) -> None:
        super().__init__(pool, files, max_batch)
        self.storage = storage
        self.quota_bytes = quota_bytes

    async def commit_media(self, received: Received, row: store.NewMedia,
                           deduplicate: bool) -> store.MediaItem:
        outcome = await self.commit((row, deduplicate), received,
                                    self.storage.path_for(row.owner_id, row.id))
        if isinstance(outcome, ServiceError):
            raise outcome
        return outcome

    async def _insert(self, connection: asyncpg.Connection,
                      rows: list[tuple[store.NewMedia, bool]]) -> list[MediaOutcome]:
        # Rows asking for deduplication and rows that do not go in separate statements;
        # an import asks the same for all of them.
        outcomes: dict[UUID, MediaOutcome] = {}
        for deduplicate in (True, False):
            part = [row for row, wanted in rows if wanted is deduplicate]
            if part:
                found = await commit_media_rows(connection, part, quota_bytes=self.quota_bytes,
                                                deduplicate=deduplicate)
                outcomes.update(zip((row.id for row in part), found, strict=True))
        return [outcomes[row.id] for row, _ in rows]

    def _keeps(self, outcome: MediaOutcome) -> bool:
        return isinstance(outcome, store.MediaItem)

    async def _abandoned(self, outcome: MediaOutcome) -> None:
        if isinstance(outcome, store.MediaItem):
            await delete_media(self.pool, self.storage, outcome.owner_id, outcome.id)
