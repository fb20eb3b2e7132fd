"""One attempt at processing one import: its sources, entries and progress."""


from __future__ import annotations

import asyncio
import contextlib
import io
import posixpath
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID, uuid4

import asyncpg
import structlog

from services.media import audit
from services.media.imports import manifest, scheduler
from services.media.imports import store as db
from services.media.imports.archive import Archive, ArchiveError, Entry, open_archive
from services.media.imports.commits import ActivityCommits, MediaCommits
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
from services.media.ingest import DuplicateMediaError
from services.media.storage import WRITE_BATCH_BYTES, Received, settled
from shared.errors import ServiceError

log = structlog.get_logger("media.imports")

if TYPE_CHECKING:
    from services.media.imports.worker import ImportWorker

log = structlog.get_logger("media.imports")

# Of those, entries larger than one write batch streaming at once: each holds up to two
# batches in memory, a smaller entry only its own size, so an archive of large photos
# costs about what one of small files does.
LARGE_ENTRIES_AT_ONCE = 2


class ImportInterruptedError(Exception):
    """The job stopped between items: the service is stopping or the import was cancelled."""


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
        found = archive.get(manifest.MANIFEST_NAME)
        if found is not None and not found.is_dir:
            document = await self._read_manifest(found)
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

        await scheduler.each(runs, import_row, row_keys,
                             stopping=lambda: self.draining)


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
                                          manifest.MAX_MANIFEST_BYTES)
        return manifest.parse(data)

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
            parsed = manifest.activity_item(index, item)
            if parsed is None:
                progress.skipped_invalid += 1
                progress.error(f"{manifest.MANIFEST_NAME}:activities[{index}]",
                               "invalid_manifest_item",
                               "The activity in the manifest is malformed.")
                return
            activity, display_name = parsed
            await self._import_activity(activity, names, display_name)

        async def import_media(numbered: tuple[int, Any]) -> None:
            index, item = numbered
            parsed_media = manifest.media_item(item)
            if parsed_media is None:
                progress.skipped_invalid += 1
                progress.error(f"{manifest.MANIFEST_NAME}:media[{index}]", "invalid_manifest_item",
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

        await scheduler.each(list(enumerate(activities)), import_activity, activity_keys,
                             stopping=lambda: self.draining)
        await scheduler.each(list(enumerate(media)), import_media, media_keys,
                             stopping=lambda: self.draining)

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
