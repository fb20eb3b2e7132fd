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
import io
import posixpath
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import structlog
from aiohttp import web

from services.media import audit
from services.media.imports import store as db
from services.media.imports.archive import Archive, ArchiveError, Entry, open_archive
from services.media.imports.commits import ActivityCommits, MediaCommits
from services.media.imports.files import ImportFiles
from services.media.imports.settings import ImportSettings
from services.media.imports.store import Progress
from services.media.imports.strava import (
    ACTIVITIES_CSV,
    ACTIVITIES_PREFIX,
    INVALID,
    MAX_CSV_BYTES,
    MEDIA_PREFIX,
    MISSING_FILE,
    ActivityFileError,
    StravaActivity,
    activity_format,
    check_activity_file,
    parse_activities_csv,
    resolve_reference,
)
from services.media.ingest import DuplicateMediaError, MediaIngestor
from services.media.storage import WRITE_BATCH_BYTES, MediaStorage, Received, settled
from shared import parsing
from shared.errors import ServiceError

log = structlog.get_logger("media.imports")

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "tempo-export"
MANIFEST_VERSION = 1
MAX_MANIFEST_BYTES = 64 * 1024 * 1024
ITEM_CONCURRENCY = 8
# Of those, entries larger than one write batch streaming at once: each holds up to two
# batches in memory, a smaller entry only its own size, so an archive of large photos
# costs about what one of small files does.
LARGE_ENTRIES_AT_ONCE = 2
# How long a stopping or cancelled job may take to finish the items it has begun.
DRAIN_SECONDS = 15.0


class ImportInterruptedError(Exception):
    """The job stopped between items: the service is stopping or the import was cancelled."""


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


class ImportJob:
    """One attempt at processing one import."""

    def __init__(self, worker: ImportWorker, record: db.ImportRecord) -> None:
        self.worker = worker
        self.record = record
        self.id = record.id
        self.owner_id = record.owner_id
        self.settings = worker.settings
        self.pool = worker.pool
        self.progress = Progress()
        self.archive: Archive | None = None
        self.cancelled_elsewhere = False
        # Set to stop between items (stop or cancel); the job then ends interrupted.
        self.draining = False
        self.archive_path = worker.files.archive_path(record.owner_id, record.id)
        # What this attempt has counted as imported, so that a second reference to the
        # same thing is a duplicate, while things an interrupted earlier attempt of this
        # import stored are still counted as imported once.
        self._counted: set[UUID] = set()
        self._unlinked: list[UUID] = []
        self._activity_commits = ActivityCommits(self.pool, worker.files)
        self._media_commits = MediaCommits(self.pool, worker.files, worker.storage,
                                           worker.ingestor.limits.quota_bytes)
        self._large_entries = asyncio.Semaphore(LARGE_ENTRIES_AT_ONCE)
        # strava id → (activity id, import id) of the owner's activities, read once for
        # the whole archive; None to look each one up (a Tempo export).
        self._known: dict[str, tuple[UUID, UUID | None]] | None = None

    # Running ---------------------------------------------------------------------------

    async def run(self) -> None:
        if self.record.attempts > self.settings.max_attempts:
            self.progress.error(None, "interrupted",
                                f"The import was interrupted {self.record.attempts - 1} "
                                "times by service restarts and was given up.")
            await self.end(db.FAILED)
            return
        loop = asyncio.get_running_loop()
        if not await loop.run_in_executor(None, self.archive_path.is_file):
            self.progress.error(None, "archive_missing",
                                "The uploaded archive is no longer available after a "
                                "service restart; upload it again.")
            await self.end(db.FAILED)
            return
        ticker = asyncio.create_task(self._tick())
        status = db.DONE
        try:
            try:
                self.archive = await self._open_archive()
                try:
                    await self._import()
                    if self.draining:
                        raise ImportInterruptedError()
                finally:
                    self._sync_bytes()
                    self.archive.close()
            except ArchiveError as exc:
                await self._roll_back()
                self.progress.error(exc.entry, exc.code, exc.message)
                status = db.FAILED
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
        await self.end(status)

    async def _open_archive(self) -> Archive:
        loop = asyncio.get_running_loop()
        opening = loop.run_in_executor(None, open_archive, self.archive_path,
                                       self.settings.limits)
        try:
            return await asyncio.shield(opening)
        except asyncio.CancelledError:
            # The check finishes in its thread regardless; close what it opened.
            with contextlib.suppress(BaseException):
                (await opening).close()
            raise

    async def _save(self) -> bool:
        links, self._unlinked = self._unlinked, []
        try:
            async with self.pool.acquire() as connection:
                return await db.save_progress(connection, self.id, self.progress, links)
        except BaseException:
            self._unlinked[:0] = links
            raise

    async def link_media(self) -> None:
        links, self._unlinked = self._unlinked, []
        if links:
            async with self.pool.acquire() as connection:
                await db.insert_import_media(connection, self.id, links)

    async def end(self, status: str) -> None:
        await self.link_media()
        async with self.pool.acquire() as connection, connection.transaction():
            ended = await db.finish_import(connection, self.id, status, self.progress)
            if ended:
                # A cancelled import was recorded by the request that cancelled it.
                await audit.record(
                    connection, audit.Origin.background(self.owner_id), audit.IMPORT_END,
                    audit.SUCCESS if status == db.DONE else audit.FAILURE,
                    importId=str(self.id), activities=self.progress.activities_imported,
                    media=self.progress.media_imported, errors=len(self.progress.errors))
        if not self.settings.keep_archive or not ended:
            await self.discard_archive()
        log.info("import_finished", import_id=str(self.id), status=status if ended else
                 "cancelled", activities=self.progress.activities_imported,
                 media=self.progress.media_imported, errors=len(self.progress.errors))

    async def discard_archive(self) -> None:
        await self.worker.files.remove(self.archive_path)
        async with self.pool.acquire() as connection:
            await db.set_archive_absent(connection, self.id)

    def _sync_bytes(self) -> None:
        if self.archive is not None:
            self.progress.bytes_done = self.archive.inflated_bytes

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.settings.progress_interval_seconds)
            self._sync_bytes()
            try:
                running = await self._save()
            except (asyncpg.PostgresError, OSError):
                log.warning("import_progress_not_saved", import_id=str(self.id), exc_info=True)
                continue
            if not running:
                # Cancelled in the database, perhaps through another replica.
                self.cancelled_elsewhere = True
                self.draining = True
                return

    async def _import(self) -> None:
        archive = self.archive
        assert archive is not None
        manifest = archive.get(MANIFEST_NAME)
        if manifest is not None and not manifest.is_dir:
            document = await self._read_manifest(manifest)
            if document is not None:
                await self._set_kind("tempo")
                await self._import_export(document)
                return
        if archive.get(ACTIVITIES_CSV) is None:
            raise ArchiveError("The archive holds neither activities.csv (a Strava export) "
                               "nor manifest.json (a Tempo export).",
                               code="not_an_export")
        await self._set_kind("strava")
        await self._import_strava()

    async def _set_kind(self, kind: str) -> None:
        async with self.pool.acquire() as connection:
            await db.set_kind(connection, self.id, kind)

    # A Strava export -------------------------------------------------------------------

    async def _import_strava(self) -> None:
        archive = self.archive
        assert archive is not None
        entry = archive.get(ACTIVITIES_CSV)
        assert entry is not None
        if entry.is_dir or entry.declared_size > MAX_CSV_BYTES:
            raise ArchiveError(f"activities.csv must be a file of at most {MAX_CSV_BYTES} "
                               "bytes.", code="invalid_activities_csv", entry=ACTIVITIES_CSV)
        progress = self.progress
        progress.entries_total = 1
        progress.bytes_total = entry.declared_size
        loop = asyncio.get_running_loop()
        activities, problems = await loop.run_in_executor(None, self._parse_csv, entry)
        progress.entries_done = 1
        progress.activities_found = len(activities) + len(problems)
        for problem in problems:
            progress.skipped_invalid += 1
            progress.error(f"{ACTIVITIES_CSV}:{problem.row}", "invalid_row", problem.message)
        names = {e.name for e in archive.files}
        runs = []
        for activity in activities:
            if self.settings.counts_as_run(activity.activity_type):
                runs.append(activity)
            else:
                progress.skipped_not_run += 1
        self._plan(runs, names)
        # One query instead of one per row. Only this import adds activities for this owner
        # while it runs (one import per owner at a time), and it records what it adds; a
        # row that appears anyway is caught by the unique index and counted a duplicate.
        async with self.pool.acquire() as connection:
            self._known = await db.select_activity_keys_by_strava_ids(
                connection, self.owner_id, [activity.strava_id for activity in runs])

        async def import_row(activity: StravaActivity) -> None:
            if not await self._import_activity(activity, names):
                # Its media are not read; they still count as handled for progress.
                progress.entries_done += sum(
                    1 for media in activity.media
                    if resolve_reference(media, MEDIA_PREFIX, names)[0] is not None)
                return
            for reference in activity.media:
                await self._import_media(reference, names,
                                         workout_id=f"strava:{activity.strava_id}")

        def row_keys(activity: StravaActivity) -> list[Any]:
            found = [("strava", activity.strava_id),
                     self._content_key(activity.filename, ACTIVITIES_PREFIX, names)]
            found += [self._content_key(media, MEDIA_PREFIX, names) for media in activity.media]
            return [key for key in found if key is not None]

        await self._each(runs, import_row, row_keys)

    async def _each(self, items: list[Any], handle: Any,
                    keys: Any = lambda _item: ()) -> None:
        """``handle`` every item, a few at once: each item waits mostly on fsync and the
        database, so overlapping them is what makes an import keep up with the disk.

        Items sharing a key (the same activity id, the same bytes) are still handled in
        list order, so that which copy is stored and which is a duplicate is exactly what
        handling them one by one would give.
        """
        loop = asyncio.get_running_loop()
        pending = iter(items)
        last: dict[Any, asyncio.Future[None]] = {}

        async def work() -> None:
            for item in pending:
                if self.draining:
                    return
                earlier = []
                mine = []
                for key in set(keys(item)):
                    previous = last.get(key)
                    if previous is not None and not previous.done():
                        earlier.append(previous)
                    last[key] = loop.create_future()
                    mine.append(last[key])
                try:
                    for future in earlier:
                        await asyncio.shield(future)
                    await handle(item)
                finally:
                    for future in mine:
                        if not future.done():
                            future.set_result(None)

        tasks = [asyncio.create_task(work()) for _ in range(ITEM_CONCURRENCY)]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _content_key(self, value: str | None, prefix: str,
                     names: set[str]) -> tuple[int, int] | None:
        """Identical bytes have the same CRC-32 and size (checked while inflating)."""
        name = resolve_reference(value, prefix, names)[0] if value else None
        entry = self.archive.get(name) if self.archive and name else None
        return (entry.info.CRC, entry.declared_size) if entry else None

    def _parse_csv(self, entry: Entry) -> tuple[list[StravaActivity], list[Any]]:
        assert self.archive is not None
        with self.archive.open_entry(entry) as raw:
            text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="")
            return parse_activities_csv(text, max_rows=self.settings.max_entries)

    def _plan(self, activities: list[StravaActivity], names: set[str]) -> None:
        """Count the entries and bytes the import is going to read, for progress."""
        assert self.archive is not None
        for activity in activities:
            references = [(activity.filename, ACTIVITIES_PREFIX)] if activity.filename else []
            references += [(media, MEDIA_PREFIX) for media in activity.media]
            for value, prefix in references:
                name, _ = resolve_reference(value, prefix, names)
                entry = self.archive.get(name) if name else None
                if entry is not None:
                    self.progress.entries_total += 1
                    self.progress.bytes_total += entry.declared_size

    # Activities ------------------------------------------------------------------------

    async def _import_activity(self, activity: StravaActivity, names: set[str],
                               display_name: str | None = None) -> bool:
        """Store one activity; False when it is skipped (its media are skipped too)."""
        progress = self.progress
        entry = None
        fmt = None
        if activity.filename:
            name, problem = resolve_reference(activity.filename, ACTIVITIES_PREFIX, names)
            if problem is not None:
                self._reference_problem(activity.filename, problem, "activities/")
                return False
            entry = self.archive.get(name) if self.archive and name else None
            fmt = activity_format(name or "")
            if entry is None or fmt is None:
                progress.skipped_invalid += 1
                progress.entries_done += 1
                progress.error(name, "unsupported_activity_format",
                               "Activity files must be .gpx, .tcx or .fit, optionally "
                               "gzip-compressed (.gz).")
                return False
        existing = await self._existing_activity(activity.strava_id)
        if existing is not None:
            existing_id, existing_import = existing
            if entry is not None:
                progress.entries_done += 1
            if existing_import == self.id and existing_id not in self._counted:
                self._counted.add(existing_id)
                progress.activities_imported += 1
            else:
                progress.skipped_duplicate += 1
            return True
        if entry is None:
            outcome = await self._insert_activity(activity)
        else:
            outcome = await self._store_activity(activity, entry, fmt or "",
                                                 display_name or posixpath.basename(entry.name))
            progress.entries_done += 1
        if outcome == "imported":
            progress.activities_imported += 1
        elif outcome == "duplicate":
            progress.skipped_duplicate += 1
        return outcome != "invalid"

    def _streaming(self, entry: Entry) -> contextlib.AbstractAsyncContextManager[Any]:
        """Held while an entry streams to disk: a turn among the few large ones, if large."""
        if entry.declared_size > WRITE_BATCH_BYTES:
            return self._large_entries
        return contextlib.nullcontext()

    async def _existing_activity(self, strava_id: str) -> tuple[UUID, UUID | None] | None:
        if self._known is not None:
            return self._known.get(strava_id)
        async with self.pool.acquire() as connection:
            existing = await db.select_activity_by_strava_id(connection, self.owner_id,
                                                             strava_id)
        return (existing.id, existing.import_id) if existing is not None else None

    def _remember(self, activity: StravaActivity, activity_id: UUID) -> None:
        self._counted.add(activity_id)
        if self._known is not None:
            self._known[activity.strava_id] = (activity_id, self.id)

    async def _insert_activity(self, activity: StravaActivity) -> str:
        """An activity without a file (entered by hand on Strava)."""
        activity_id = uuid4()
        try:
            async with self.pool.acquire() as connection:
                await db.insert_activity(
                    connection, id=activity_id, owner_id=self.owner_id,
                    strava_id=activity.strava_id, import_id=self.id,
                    started_at=activity.started_at, name=activity.name,
                    activity_type=activity.activity_type,
                    distance_meters=activity.distance_meters,
                    elapsed_seconds=activity.elapsed_seconds, file_format=None,
                    filename=None, size_bytes=None, sha256=None)
        except asyncpg.UniqueViolationError:
            return "duplicate"
        self._remember(activity, activity_id)
        return "imported"

    async def _store_activity(self, activity: StravaActivity, entry: Entry, fmt: str,
                              display_name: str) -> str:
        """Stream the activity file to disk, check it, then row and rename together."""
        archive = self.archive
        assert archive is not None
        storage = self.worker.storage
        loop = asyncio.get_running_loop()
        activity_id = uuid4()
        try:
            async with self._streaming(entry), \
                    contextlib.aclosing(archive.iter_entry(entry)) as chunks, \
                    storage.receive(chunks, max_bytes=self.worker.max_file_size_bytes
                                    ) as received:
                await loop.run_in_executor(None, check_activity_file, str(received.path), fmt,
                                           received.size, self.settings.limits)
                # Row, rename and commit run to completion even if the job is cancelled,
                # so that a commit that happened is never undone on disk only.
                outcome = await self._commit_activity(activity, received, fmt, display_name,
                                                      activity_id)
        except ActivityFileError as exc:
            self.progress.skipped_invalid += 1
            self.progress.error(entry.name, exc.code, exc.message)
            return "invalid"
        except ArchiveError:
            raise
        except ServiceError as exc:
            self.progress.skipped_invalid += 1
            self.progress.error(entry.name, exc.code, exc.message)
            return "invalid"
        if outcome == "imported":
            self._remember(activity, activity_id)
        return outcome

    async def _commit_activity(self, activity: StravaActivity, received: Received, fmt: str,
                               display_name: str, activity_id: UUID) -> str:
        row = db.ActivityFileRow(
            id=activity_id, owner_id=self.owner_id, strava_id=activity.strava_id,
            import_id=self.id, started_at=activity.started_at, name=activity.name,
            activity_type=activity.activity_type, distance_meters=activity.distance_meters,
            elapsed_seconds=activity.elapsed_seconds, file_format=fmt,
            filename=_display_name(display_name), size_bytes=received.size,
            sha256=received.sha256)
        final = self.worker.files.activity_path(self.owner_id, activity_id)
        inserted = await self._activity_commits.commit(row, received, final)
        return "imported" if inserted else "duplicate"

    def _reference_problem(self, value: str, problem: str, folder: str) -> None:
        shown = _printable(value)
        if problem == MISSING_FILE:
            self.progress.skipped_missing_file += 1
            self.progress.error(shown, "missing_file",
                                "The archive has no file by this name.")
        else:
            self.progress.skipped_invalid += 1
            self.progress.error(shown, "invalid_path",
                                f"The path does not name a file under {folder} in the "
                                "archive; paths outside it are not followed.")

    # Media -----------------------------------------------------------------------------

    async def _import_media(self, reference: str, names: set[str], *,
                            workout_id: str | None, filename: str | None = None,
                            caption: str | None = None, created_at: datetime | None = None,
                            sha256: str | None = None) -> None:
        progress = self.progress
        name, problem = resolve_reference(reference, MEDIA_PREFIX, names)
        if problem is not None or name is None:
            self._reference_problem(reference, problem or INVALID, "media/")
            return
        archive = self.archive
        assert archive is not None
        entry = archive.get(name)
        assert entry is not None
        try:
            async with self._streaming(entry), \
                    contextlib.aclosing(archive.iter_entry(entry)) as chunks:
                item = await self.worker.ingestor.ingest(
                    chunks, filename=filename or posixpath.basename(name),
                    owner_id=self.owner_id, workout_id=workout_id, caption=caption,
                    declared_size=entry.declared_size, deduplicate=True,
                    commit=self._media_commits.commit_media)
        except ArchiveError:
            raise
        except DuplicateMediaError as exc:
            progress.entries_done += 1
            async with self.pool.acquire() as connection:
                ours = await db.claim_import_media(connection, self.id, exc.existing,
                                                   self.record.created_at, workout_id)
            if ours and exc.existing.id not in self._counted:
                self._counted.add(exc.existing.id)
                progress.media_imported += 1
            else:
                progress.skipped_duplicate += 1
            return
        except ServiceError as exc:
            progress.entries_done += 1
            progress.skipped_invalid += 1
            progress.error(name, exc.code, exc.message)
            return
        # Linked to this import with the next progress save (claim_import_media covers
        # an item whose link a crash lost); listed at once so that a roll-back finds it.
        self._unlinked.append(item.id)
        progress.entries_done += 1
        if sha256 is not None and item.sha256 != sha256:
            await settled(self.worker.ingestor.delete(self.owner_id, item.id))
            # A progress save may have linked it meanwhile; the delete cascaded to that.
            if item.id in self._unlinked:
                self._unlinked.remove(item.id)
            progress.skipped_invalid += 1
            progress.error(name, "checksum_mismatch",
                           "The file's SHA-256 differs from the manifest's.")
            return
        if created_at is not None:
            async with self.pool.acquire() as connection:
                await db.set_media_created_at(connection, self.owner_id, item.id, created_at)
        self._counted.add(item.id)
        progress.media_imported += 1

    # An export of this service ---------------------------------------------------------

    async def _read_manifest(self, entry: Entry) -> dict[str, Any] | None:
        assert self.archive is not None
        loop = asyncio.get_running_loop()
        data = await loop.run_in_executor(None, self.archive.read_bytes, entry,
                                          MAX_MANIFEST_BYTES)
        try:
            document = parsing.loads(data)
        except ValueError:
            return None
        if not isinstance(document, dict) or document.get("format") != MANIFEST_FORMAT:
            return None
        if document.get("version") != MANIFEST_VERSION:
            raise ArchiveError("The export was made by an incompatible version.",
                               code="unsupported_export_version", entry=MANIFEST_NAME)
        return document

    async def _import_export(self, document: dict[str, Any]) -> None:
        assert self.archive is not None
        progress = self.progress
        media = document.get("media") if isinstance(document.get("media"), list) else []
        activities = (document.get("activities")
                      if isinstance(document.get("activities"), list) else [])
        names = {entry.name for entry in self.archive.files}
        progress.entries_total = 1
        progress.entries_done = 1
        for item in (*media, *activities):
            path = item.get("path") if isinstance(item, dict) else None
            entry = self.archive.get(path) if isinstance(path, str) else None
            if entry is not None:
                progress.entries_total += 1
                progress.bytes_total += entry.declared_size
        progress.activities_found = len(activities)

        async def import_activity(numbered: tuple[int, Any]) -> None:
            index, item = numbered
            parsed = _manifest_activity(index, item)
            if parsed is None:
                progress.skipped_invalid += 1
                progress.error(f"{MANIFEST_NAME}:activities[{index}]", "invalid_manifest_item",
                               "The activity in the manifest is malformed.")
                return
            activity, display_name = parsed
            await self._import_activity(activity, names, display_name)

        async def import_media(numbered: tuple[int, Any]) -> None:
            index, item = numbered
            parsed_media = _manifest_media(item)
            if parsed_media is None:
                progress.skipped_invalid += 1
                progress.error(f"{MANIFEST_NAME}:media[{index}]", "invalid_manifest_item",
                               "The media item in the manifest is malformed.")
                return
            await self._import_media(parsed_media["path"], names, **{
                key: value for key, value in parsed_media.items() if key != "path"})

        def activity_keys(numbered: tuple[int, Any]) -> list[Any]:
            item = numbered[1]
            if not isinstance(item, dict):
                return []
            path = item.get("path") if isinstance(item.get("path"), str) else None
            found = [("strava", str(item.get("stravaId"))),
                     self._content_key(path, ACTIVITIES_PREFIX, names)]
            return [key for key in found if key is not None]

        def media_keys(numbered: tuple[int, Any]) -> list[Any]:
            item = numbered[1]
            path = item.get("path") if isinstance(item, dict) else None
            key = self._content_key(path, MEDIA_PREFIX, names) if isinstance(path, str) \
                else None
            return [key] if key else []

        await self._each(list(enumerate(activities)), import_activity, activity_keys)
        await self._each(list(enumerate(media)), import_media, media_keys)

    # Undoing a refused archive ---------------------------------------------------------

    async def _roll_back(self) -> None:
        """Remove what this import stored: an archive refused as a whole leaves nothing."""
        files = self.worker.files
        await self.link_media()
        async with self.pool.acquire() as connection:
            media_ids = [row["media_id"] for row in await connection.fetch(
                "SELECT media_id FROM media.import_media WHERE import_id = $1", self.id)]
            activity_rows = await connection.fetch(
                "DELETE FROM media.activities WHERE import_id = $1 RETURNING id, sha256",
                self.id)
        for row in activity_rows:
            if row["sha256"] is not None:
                await files.remove(files.activity_path(self.owner_id, row["id"]))
        await self.worker.ingestor.discard(self.owner_id, media_ids)
        self.progress.activities_imported = 0
        self.progress.media_imported = 0


def _display_name(name: str) -> str:
    cleaned = "".join(char for char in name if char.isprintable()).strip()
    return cleaned[:255] or "activity"


def _printable(value: str) -> str:
    return "".join(char if char.isprintable() else f"\\x{ord(char):02x}"
                   for char in value)[:300]


def _optional(item: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = item.get(key)
    if value is None:
        return None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(key)
    return value


def _timestamp(item: dict[str, Any], key: str) -> datetime | None:
    value = _optional(item, key, str)
    if value is None:
        return None
    try:
        return parsing.in_utc(datetime.fromisoformat(value))
    except ValueError:
        raise ValueError(key) from None


def _manifest_activity(index: int, item: Any) -> tuple[StravaActivity, str | None] | None:
    if not isinstance(item, dict):
        return None
    try:
        strava_id = _optional(item, "stravaId", str)
        activity_type = _optional(item, "type", str)
        if not strava_id or not strava_id.isascii() or not strava_id.isdigit() \
                or len(strava_id) > 20 or not activity_type or len(activity_type) > 64:
            return None
        distance = _optional(item, "distanceMeters", (int, float))
        elapsed = _optional(item, "elapsedSeconds", int)
        activity = StravaActivity(
            row=index, strava_id=strava_id, started_at=_timestamp(item, "startedAt"),
            name=(_optional(item, "name", str) or "")[:500], activity_type=activity_type,
            elapsed_seconds=elapsed,
            distance_meters=float(distance) if distance is not None else None,
            filename=_optional(item, "path", str), media=())
        return activity, _optional(item, "filename", str)
    except ValueError:
        return None


def _manifest_media(item: Any) -> dict[str, Any] | None:
    if not isinstance(item, dict):
        return None
    try:
        path = _optional(item, "path", str)
        if not path:
            return None
        return {
            "path": path,
            "filename": _optional(item, "filename", str),
            "workout_id": _optional(item, "workoutId", str),
            "caption": _optional(item, "caption", str),
            "created_at": _timestamp(item, "createdAt"),
            "sha256": _optional(item, "sha256", str),
        }
    except ValueError:
        return None


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

