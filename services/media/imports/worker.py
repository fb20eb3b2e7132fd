"""The background import of a whole archive: a Strava export or this service's own export.

A worker in each process claims queued imports from the database (at most one running
per user, enforced by a unique index so that replicas agree), and runs each as a job:
open and check the archive, read the entries it needs as streams, and store what they
hold through the same code paths as uploads. Progress lives in memory and is saved
every ``Import__ProgressIntervalSeconds`` together with a heartbeat. A stopping process
hands its running imports back to the queue; a crashed one stops sending heartbeats and
its imports are requeued by whoever notices. An import interrupted too often ends
``failed`` with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from uuid import UUID

import asyncpg
import structlog
from aiohttp import web

from services.media.imports import store as db
from services.media.imports.files import ImportFiles
from services.media.imports.job import ImportInterruptedError, ImportJob
from services.media.imports.settings import ImportSettings
from services.media.ingest import MediaIngestor
from services.media.storage import MediaStorage, settled

log = structlog.get_logger("media.imports")

# How long a stopping or cancelled job may take to finish the items it has begun.
DRAIN_SECONDS = 15.0


class ImportWorker:
    """Claims queued imports and runs them; one per app, started by a cleanup context."""

    def __init__(self, *, pool: asyncpg.Pool, storage: MediaStorage, ingestor: MediaIngestor,
                 settings: ImportSettings, max_file_size_bytes: int) -> None:
        self.pool = pool
        self.files = ImportFiles(storage)
        self.storage = storage
        self.ingestor = ingestor
        self.settings = settings
        self.max_file_size_bytes = max_file_size_bytes
        self._running: dict[UUID, asyncio.Task[None]] = {}
        self._jobs: dict[UUID, ImportJob] = {}
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self.stopping = False

    # Life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._loop(), name="import-worker")

    async def stop(self) -> None:
        """Stop claiming, let running jobs finish their current items, hand them back to
        the queue."""
        self.stopping = True
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.wait([self._loop_task])
        await self._halt(list(self._running))

    async def _halt(self, import_ids: list[UUID]) -> None:
        """Ask jobs to stop between items; cancel those that do not within the grace."""
        tasks = []
        for import_id in import_ids:
            job = self._jobs.get(import_id)
            if job is not None:
                job.draining = True
            task = self._running.get(import_id)
            if task is not None:
                tasks.append(task)
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=DRAIN_SECONDS)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)

    def wake(self) -> None:
        self._wake.set()

    def is_running(self, import_id: UUID) -> bool:
        return import_id in self._running

    async def interrupt(self, import_id: UUID) -> bool:
        """Stop a job running in this process (already cancelled in the database)."""
        if import_id not in self._running:
            return False
        await self._halt([import_id])
        return True

    async def _loop(self) -> None:
        while not self.stopping:
            try:
                async with self.pool.acquire() as connection:
                    requeued = await db.requeue_stale_imports(
                        connection, self.settings.stale_after_seconds)
                if requeued:
                    log.warning("imports_requeued_after_crash",
                                imports=[str(i) for i in requeued])
                await self._claim()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("import_worker_error")
            # Not wait_for: on Python 3.11 it returns normally when the task is cancelled
            # just after the event was set (a job finishing, an import arriving), and the
            # stop that cancelled it would then wait for this loop forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.poll_interval_seconds):
                    await self._wake.wait()
            self._wake.clear()

    async def _claim(self) -> None:
        while len(self._running) < self.settings.workers and not self.stopping:
            async with self.pool.acquire() as connection:
                record = await db.claim_next_import(connection)
            if record is None:
                return
            task = asyncio.create_task(self._process(record), name=f"import-{record.id}")
            self._running[record.id] = task
            task.add_done_callback(lambda _t, key=record.id: self._finished(key))

    def _finished(self, import_id: UUID) -> None:
        self._running.pop(import_id, None)
        self._wake.set()

    async def _process(self, record: db.ImportRecord) -> None:
        job = ImportJob(self, record)
        self._jobs[record.id] = job
        log.info("import_started", import_id=str(record.id), owner_id=str(record.owner_id),
                 attempt=record.attempts)
        try:
            await job.run()
        except (asyncio.CancelledError, ImportInterruptedError):
            with contextlib.suppress(Exception):
                await settled(job.link_media())
            if self.stopping and not job.cancelled_elsewhere:
                await settled(self._requeue(record.id))
                log.info("import_interrupted", import_id=str(record.id))
            else:
                await settled(job.discard_archive())
                log.info("import_cancelled", import_id=str(record.id))
        except Exception:
            log.exception("import_crashed", import_id=str(record.id))
            job.progress.error(None, "internal_error",
                               "The import stopped on an unexpected error.")
            await settled(job.end(db.FAILED))
        finally:
            self._jobs.pop(record.id, None)

    async def _requeue(self, import_id: UUID) -> None:
        async with self.pool.acquire() as connection:
            await db.requeue_imports(connection, [import_id])


# Wiring ----------------------------------------------------------------------------------

IMPORT_WORKER = web.AppKey("import_worker", ImportWorker)


async def remove_leftover_archives(worker: ImportWorker) -> None:
    """Archives of imports that ended while their removal failed."""
    if worker.settings.keep_archive:
        return
    async with worker.pool.acquire() as connection:
        leftovers = await db.select_finished_with_archive(connection)
    for owner_id, import_id in leftovers:
        await worker.files.remove(worker.files.archive_path(owner_id, import_id))
        async with worker.pool.acquire() as connection:
            await db.set_archive_absent(connection, import_id)


def import_worker_context(settings: ImportSettings, max_file_size_bytes: int):
    """A cleanup context: start the worker once the pool, storage and ingestor exist."""
    from services.media.keys import INGESTOR, STORAGE
    from shared.keys import DB_POOL

    async def context(app: web.Application) -> AsyncIterator[None]:
        worker = ImportWorker(pool=app[DB_POOL], storage=app[STORAGE],
                              ingestor=app[INGESTOR], settings=settings,
                              max_file_size_bytes=max_file_size_bytes)
        await remove_leftover_archives(worker)
        app[IMPORT_WORKER] = worker
        worker.start()
        try:
            yield
        finally:
            await worker.stop()

    return context
