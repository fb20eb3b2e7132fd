"""SQL for imports and activities. Functions take a connection and return dataclasses."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from services.media import store

MAX_ERRORS = 100

QUEUED = "queued"
PROCESSING = "processing"
DONE = "done"
FAILED = "failed"
CANCELLED = "cancelled"
ACTIVE = (QUEUED, PROCESSING)


@dataclass(slots=True)
class Progress:
    """What an import has done so far; kept in memory and saved every fraction of a second."""

    entries_total: int = 0
    entries_done: int = 0
    bytes_total: int = 0
    bytes_done: int = 0
    activities_found: int = 0
    activities_imported: int = 0
    skipped_not_run: int = 0
    skipped_duplicate: int = 0
    skipped_missing_file: int = 0
    skipped_invalid: int = 0
    media_imported: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    errors_omitted: int = 0

    def error(self, entry: str | None, code: str, message: str) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append({"entry": entry, "code": code, "message": message})
        else:
            self.errors_omitted += 1

    def counters(self) -> tuple[int, ...]:
        return (self.entries_total, self.entries_done, self.bytes_total, self.bytes_done,
                self.activities_found, self.activities_imported, self.skipped_not_run,
                self.skipped_duplicate, self.skipped_missing_file, self.skipped_invalid,
                self.media_imported)




@dataclass(frozen=True, slots=True)
class ImportRecord:
    id: UUID
    owner_id: UUID
    status: str
    kind: str | None
    archive_bytes: int
    archive_present: bool
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    progress: Progress

    def to_json(self) -> dict[str, Any]:
        p = self.progress
        return {
            "id": str(self.id),
            "status": self.status,
            "progress": {
                "entriesTotal": p.entries_total,
                "entriesDone": p.entries_done,
                "bytesTotal": p.bytes_total,
                "bytesDone": p.bytes_done,
            },
            "summary": {
                "activitiesFound": p.activities_found,
                "activitiesImported": p.activities_imported,
                "skipped": {
                    "notRun": p.skipped_not_run,
                    "duplicate": p.skipped_duplicate,
                    "missingFile": p.skipped_missing_file,
                    "invalid": p.skipped_invalid,
                },
                "mediaImported": p.media_imported,
                "errors": p.errors,
                "errorsOmitted": p.errors_omitted,
            },
            "createdAt": self.created_at.isoformat(),
            "startedAt": self.started_at.isoformat() if self.started_at else None,
            "finishedAt": self.finished_at.isoformat() if self.finished_at else None,
        }


def _record(row: asyncpg.Record) -> ImportRecord:
    errors = row["errors"]
    progress = Progress(
        entries_total=row["entries_total"], entries_done=row["entries_done"],
        bytes_total=row["bytes_total"], bytes_done=row["bytes_done"],
        activities_found=row["activities_found"],
        activities_imported=row["activities_imported"],
        skipped_not_run=row["skipped_not_run"], skipped_duplicate=row["skipped_duplicate"],
        skipped_missing_file=row["skipped_missing_file"],
        skipped_invalid=row["skipped_invalid"], media_imported=row["media_imported"],
        errors=json.loads(errors) if isinstance(errors, str) else list(errors),
        errors_omitted=row["errors_omitted"],
    )
    return ImportRecord(
        id=row["id"], owner_id=row["owner_id"], status=row["status"], kind=row["kind"],
        archive_bytes=row["archive_bytes"], archive_present=row["archive_present"],
        attempts=row["attempts"], created_at=row["created_at"],
        started_at=row["started_at"], finished_at=row["finished_at"],
        heartbeat_at=row["heartbeat_at"], progress=progress,
    )


def _progress_args(progress: Progress) -> tuple[Any, ...]:
    return (*progress.counters(), json.dumps(progress.errors), progress.errors_omitted)


_UPDATE_PROGRESS = (
    "UPDATE media.imports SET entries_total = $2, entries_done = $3, bytes_total = $4,"
    " bytes_done = $5,"
    " activities_found = $6, activities_imported = $7, skipped_not_run = $8,"
    " skipped_duplicate = $9, skipped_missing_file = $10, skipped_invalid = $11,"
    " media_imported = $12, errors = $13::jsonb, errors_omitted = $14"
)


# Imports -----------------------------------------------------------------------------------

async def insert_import(connection: asyncpg.Connection, *, id: UUID, owner_id: UUID,
                        archive_bytes: int) -> ImportRecord:
    row = await connection.fetchrow(
        "INSERT INTO media.imports (id, owner_id, archive_bytes) VALUES ($1, $2, $3)"
        " RETURNING *",
        id, owner_id, archive_bytes,
    )
    return _record(row)


async def count_active_imports(connection: asyncpg.Connection, owner_id: UUID) -> int:
    return await connection.fetchval(
        "SELECT count(*) FROM media.imports WHERE owner_id = $1 AND status = ANY($2::text[])",
        owner_id, list(ACTIVE))


async def lock_owner_imports(connection: asyncpg.Connection, owner_id: UUID) -> None:
    """Serialise the check-then-insert of an owner's imports (inside a transaction)."""
    await connection.execute("SELECT pg_advisory_xact_lock(hashtext($1))",
                             f"tempo-imports:{owner_id}")


async def select_import(connection: asyncpg.Connection, owner_id: UUID,
                        import_id: UUID) -> ImportRecord | None:
    row = await connection.fetchrow(
        "SELECT * FROM media.imports WHERE id = $1 AND owner_id = $2",
        import_id, owner_id)
    return _record(row) if row else None


async def select_imports(connection: asyncpg.Connection, owner_id: UUID,
                         limit: int) -> list[ImportRecord]:
    rows = await connection.fetch(
        "SELECT * FROM media.imports WHERE owner_id = $1"
        " ORDER BY created_at DESC, id DESC LIMIT $2",
        owner_id, limit)
    return [_record(row) for row in rows]


async def claim_next_import(connection: asyncpg.Connection) -> ImportRecord | None:
    """Move the oldest queued import of an owner with none running to ``processing``."""
    try:
        row = await connection.fetchrow(
            """
            UPDATE media.imports SET status = 'processing', attempts = attempts + 1,
                   started_at = coalesce(started_at, now()), heartbeat_at = now()
             WHERE id = (
                   SELECT q.id FROM media.imports q
                    WHERE q.status = 'queued'
                      AND NOT EXISTS (SELECT 1 FROM media.imports p
                                       WHERE p.owner_id = q.owner_id
                                         AND p.status = 'processing')
                    ORDER BY q.created_at, q.id
                    LIMIT 1
                    FOR UPDATE SKIP LOCKED)
            RETURNING *
            """
        )
    except asyncpg.UniqueViolationError:
        # Another replica claimed this owner's next import at the same moment.
        return None
    return _record(row) if row else None


async def save_progress(connection: asyncpg.Connection, import_id: UUID,
                        progress: Progress, media_ids: list[UUID] = ()) -> bool:
    """Record progress, the heartbeat and which media the import stored since the last
    save; False when the import is no longer running (cancelled meanwhile, possibly
    through another replica)."""
    async with connection.transaction():
        # Saved twice a second; a crash loses at most the last save, which the resumed
        # import rewrites anyway.
        await connection.execute("SET LOCAL synchronous_commit = off")
        if media_ids:
            await insert_import_media(connection, import_id, list(media_ids))
        status = await connection.fetchval(
            _UPDATE_PROGRESS + ", heartbeat_at = now()"
            " WHERE id = $1 AND status = 'processing' RETURNING status",
            import_id, *_progress_args(progress))
    return status is not None


async def set_kind(connection: asyncpg.Connection, import_id: UUID, kind: str) -> None:
    await connection.execute("UPDATE media.imports SET kind = $2 WHERE id = $1",
                             import_id, kind)


async def finish_import(connection: asyncpg.Connection, import_id: UUID, status: str,
                        progress: Progress) -> bool:
    """End a running import with ``status``; False when it had already ended."""
    result = await connection.fetchval(
        _UPDATE_PROGRESS + ", status = $15,"
        " finished_at = now(), heartbeat_at = NULL"
        " WHERE id = $1 AND status = ANY($16::text[]) RETURNING status",
        import_id, *_progress_args(progress), status, list(ACTIVE))
    return result is not None


async def cancel_import(connection: asyncpg.Connection, owner_id: UUID,
                        import_id: UUID) -> ImportRecord | None:
    row = await connection.fetchrow(
        "UPDATE media.imports SET status = 'cancelled', finished_at = now(),"
        " heartbeat_at = NULL WHERE id = $1 AND owner_id = $2"
        " AND status = ANY($3::text[]) RETURNING *",
        import_id, owner_id, list(ACTIVE))
    return _record(row) if row else None


async def requeue_imports(connection: asyncpg.Connection, import_ids: list[UUID]) -> None:
    """Hand running imports back to the queue (this process is stopping)."""
    await connection.execute(
        "UPDATE media.imports SET status = 'queued', heartbeat_at = NULL"
        " WHERE id = ANY($1::uuid[]) AND status = 'processing'",
        import_ids)


async def requeue_stale_imports(connection: asyncpg.Connection,
                                stale_seconds: float) -> list[UUID]:
    """Imports whose worker stopped sending heartbeats (a crash) go back to the queue."""
    rows = await connection.fetch(
        "UPDATE media.imports SET status = 'queued', heartbeat_at = NULL"
        " WHERE status = 'processing'"
        " AND (heartbeat_at IS NULL OR heartbeat_at < now() - make_interval(secs => $1))"
        " RETURNING id",
        float(stale_seconds))
    return [row["id"] for row in rows]


async def set_archive_absent(connection: asyncpg.Connection, import_id: UUID) -> None:
    await connection.execute(
        "UPDATE media.imports SET archive_present = false WHERE id = $1", import_id)


async def select_finished_with_archive(connection: asyncpg.Connection
                                       ) -> list[tuple[UUID, UUID]]:
    """(owner, import) of ended imports whose archive may still be on disk."""
    rows = await connection.fetch(
        "SELECT owner_id, id FROM media.imports WHERE archive_present"
        " AND status = ANY($1::text[])", [DONE, FAILED, CANCELLED])
    return [(row["owner_id"], row["id"]) for row in rows]


async def select_owner_imports_for_export(connection: asyncpg.Connection,
                                          owner_id: UUID) -> list[ImportRecord]:
    rows = await connection.fetch(
        "SELECT * FROM media.imports WHERE owner_id = $1"
        " ORDER BY created_at, id", owner_id)
    return [_record(row) for row in rows]


# Activities -------------------------------------------------------------------------------



@dataclass(frozen=True, slots=True)
class Activity:
    id: UUID
    owner_id: UUID
    strava_id: str
    import_id: UUID | None
    started_at: datetime | None
    name: str
    activity_type: str
    distance_meters: float | None
    elapsed_seconds: int | None
    file_format: str | None
    filename: str | None
    size_bytes: int | None
    sha256: str | None
    created_at: datetime
    broken_at: datetime | None = None
    broken_reason: str | None = None


async def select_activity_by_strava_id(connection: asyncpg.Connection, owner_id: UUID,
                                       strava_id: str) -> Activity | None:
    row = await connection.fetchrow(
        "SELECT * FROM media.activities WHERE owner_id = $1 AND strava_id = $2",
        owner_id, strava_id)
    return Activity(**dict(row)) if row else None


async def select_activity_keys_by_strava_ids(connection: asyncpg.Connection, owner_id: UUID,
                                             strava_ids: list[str]
                                             ) -> dict[str, tuple[UUID, UUID | None]]:
    """strava id → (activity id, import id) of the owner's activities among ``strava_ids``."""
    rows = await connection.fetch(
        "SELECT strava_id, id, import_id FROM media.activities"
        " WHERE owner_id = $1 AND strava_id = ANY($2::text[])", owner_id, strava_ids)
    return {row["strava_id"]: (row["id"], row["import_id"]) for row in rows}


async def insert_activity(connection: asyncpg.Connection, *, id: UUID, owner_id: UUID,
                          strava_id: str, import_id: UUID | None,
                          started_at: datetime | None, name: str, activity_type: str,
                          distance_meters: float | None, elapsed_seconds: int | None,
                          file_format: str | None, filename: str | None,
                          size_bytes: int | None, sha256: str | None) -> Activity:
    row = await connection.fetchrow(
        "INSERT INTO media.activities (id, owner_id, strava_id, import_id, started_at, name,"
        " activity_type, distance_meters, elapsed_seconds, file_format, filename, size_bytes,"
        " sha256) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        " RETURNING *",
        id, owner_id, strava_id, import_id, started_at, name, activity_type, distance_meters,
        elapsed_seconds, file_format, filename, size_bytes, sha256)
    return Activity(**dict(row))


@dataclass(frozen=True, slots=True)
class ActivityFileRow:
    """An activity whose file has been received; inserted with others in one statement."""

    id: UUID
    owner_id: UUID
    strava_id: str
    import_id: UUID | None
    started_at: datetime | None
    name: str
    activity_type: str
    distance_meters: float | None
    elapsed_seconds: int | None
    file_format: str
    filename: str
    size_bytes: int
    sha256: str


async def insert_activity_files(connection: asyncpg.Connection,
                                rows: list[ActivityFileRow]) -> set[UUID]:
    """Insert several activities at once; the ids inserted. A row whose Strava id or bytes
    the owner already has is left out rather than failing the others."""
    if not rows:
        return set()
    columns = list(zip(*((row.id, row.owner_id, row.strava_id, row.import_id, row.started_at,
                          row.name, row.activity_type, row.distance_meters,
                          row.elapsed_seconds, row.file_format, row.filename, row.size_bytes,
                          row.sha256) for row in rows), strict=True))
    inserted = await connection.fetch(
        "INSERT INTO media.activities (id, owner_id, strava_id, import_id, started_at, name,"
        " activity_type, distance_meters, elapsed_seconds, file_format, filename, size_bytes,"
        " sha256) SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::uuid[],"
        " $5::timestamptz[], $6::text[], $7::text[], $8::float8[], $9::int4[], $10::text[],"
        " $11::text[], $12::int8[], $13::text[])"
        " ON CONFLICT DO NOTHING RETURNING id",
        *(list(column) for column in columns))
    return {row["id"] for row in inserted}


async def select_activities(connection: asyncpg.Connection, owner_id: UUID) -> list[Activity]:
    rows = await connection.fetch(
        "SELECT * FROM media.activities WHERE owner_id = $1"
        " ORDER BY started_at NULLS LAST, strava_id", owner_id)
    return [Activity(**dict(row)) for row in rows]


async def select_all_activity_files(connection: asyncpg.Connection
                                    ) -> list[tuple[UUID, UUID, int, str]]:
    """(owner, activity, size, sha256) of every activity with a file not known broken."""
    rows = await connection.fetch(
        "SELECT owner_id, id, size_bytes, sha256 FROM media.activities"
        " WHERE sha256 IS NOT NULL AND broken_at IS NULL")
    return [(row["owner_id"], row["id"], row["size_bytes"], row["sha256"]) for row in rows]


async def select_import_keys(connection: asyncpg.Connection) -> set[tuple[UUID, UUID]]:
    rows = await connection.fetch("SELECT owner_id, id FROM media.imports")
    return {(row["owner_id"], row["id"]) for row in rows}


async def activity_or_import_exists(connection: asyncpg.Connection, owner_id: UUID,
                                    item_id: UUID) -> bool:
    return bool(await connection.fetchval(
        "SELECT EXISTS (SELECT 1 FROM media.activities WHERE id = $1 AND owner_id = $2)"
        " OR EXISTS (SELECT 1 FROM media.imports WHERE id = $1 AND owner_id = $2)",
        item_id, owner_id))


async def mark_activity_broken(connection: asyncpg.Connection, activity_id: UUID,
                               reason: str) -> None:
    await connection.execute(
        "UPDATE media.activities SET broken_at = now(), broken_reason = $2"
        " WHERE id = $1 AND broken_at IS NULL", activity_id, reason)


# Media brought in by an import ------------------------------------------------------------

async def insert_import_media(connection: asyncpg.Connection, import_id: UUID,
                              media_ids: list[UUID]) -> None:
    # Items deleted in the meantime are skipped rather than failing the whole save.
    await connection.execute(
        "INSERT INTO media.import_media (import_id, media_id)"
        " SELECT $1, m.id FROM media.media m WHERE m.id = ANY($2::uuid[])"
        " ON CONFLICT DO NOTHING", import_id, media_ids)


async def claim_import_media(connection: asyncpg.Connection, import_id: UUID,
                             item: store.MediaItem, import_created_at: datetime,
                             workout_id: str | None) -> bool:
    """Whether ``item`` was stored by this import (an earlier, interrupted attempt).

    Linked items are. So is an unlinked item with the same workout made after the import
    was queued: an attempt interrupted between storing it and linking it left it so, and
    it is linked now.
    """
    if await import_created_media(connection, import_id, item.id):
        return True
    if item.workout_id != workout_id or item.created_at < import_created_at:
        return False
    linked = await connection.fetchval(
        "SELECT EXISTS (SELECT 1 FROM media.import_media WHERE media_id = $1)", item.id)
    if linked:
        return False
    await insert_import_media(connection, import_id, [item.id])
    return True


async def import_created_media(connection: asyncpg.Connection, import_id: UUID,
                               media_id: UUID) -> bool:
    return bool(await connection.fetchval(
        "SELECT EXISTS (SELECT 1 FROM media.import_media WHERE import_id = $1"
        " AND media_id = $2)", import_id, media_id))


async def set_media_created_at(connection: asyncpg.Connection, owner_id: UUID,
                               media_id: UUID, created_at: datetime) -> None:
    """Restore an exported item's original time (an export being imported)."""
    await connection.execute(
        "UPDATE media.media SET created_at = $3 WHERE id = $1 AND owner_id = $2",
        media_id, owner_id, created_at)


async def select_owner_media(connection: asyncpg.Connection,
                             owner_id: UUID) -> list[store.MediaItem]:
    """The owner's intact media items, oldest first (for an export)."""
    rows = await connection.fetch(
        "SELECT * FROM media.media WHERE owner_id = $1 AND broken_at IS NULL"
        " ORDER BY created_at, id", owner_id)
    return [store.MediaItem(**dict(row)) for row in rows]


async def select_owner_import_media(connection: asyncpg.Connection, owner_id: UUID
                                    ) -> dict[UUID, UUID]:
    """media id → the import that brought it in, for the owner's items."""
    rows = await connection.fetch(
        "SELECT im.media_id, im.import_id FROM media.import_media im"
        " JOIN media.imports i ON i.id = im.import_id WHERE i.owner_id = $1", owner_id)
    return {row["media_id"]: row["import_id"] for row in rows}
