"""SQL for the media schema. Functions take a connection and return dataclasses."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from services.media.domain import Cursor

# Every query names the columns of MediaItem explicitly (never *), so that a column
# added later does not break the dataclass.


@dataclass(frozen=True, slots=True)
class MediaItem:
    id: UUID
    owner_id: UUID
    filename: str
    mime_type: str
    size_bytes: int
    sha256: str
    workout_id: str | None
    caption: str | None
    width: int | None
    height: int | None
    created_at: datetime
    broken_at: datetime | None = None
    broken_reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": str(self.id),
            "filename": self.filename,
            "mimeType": self.mime_type,
            "sizeBytes": self.size_bytes,
            "sha256": self.sha256,
            "workoutId": self.workout_id,
            "caption": self.caption,
            "createdAt": self.created_at.isoformat(),
        }
        if self.width is not None and self.height is not None:
            body["width"] = self.width
            body["height"] = self.height
        if self.broken_at is not None:
            body["broken"] = True
        return body


def _item(row: asyncpg.Record) -> MediaItem:
    return MediaItem(**dict(row))


@dataclass(frozen=True, slots=True)
class NewMedia:
    """A received file's row, not yet inserted."""

    id: UUID
    owner_id: UUID
    filename: str
    mime_type: str
    size_bytes: int
    sha256: str
    workout_id: str | None
    caption: str | None
    width: int | None
    height: int | None


async def insert_media_rows(connection: asyncpg.Connection,
                            rows: list[NewMedia]) -> dict[UUID, MediaItem]:
    """Insert several items in one statement; the inserted items by id."""
    if not rows:
        return {}
    columns = list(zip(*((row.id, row.owner_id, row.filename, row.mime_type, row.size_bytes,
                          row.sha256, row.workout_id, row.caption, row.width, row.height)
                         for row in rows), strict=True))
    inserted = await connection.fetch(
        "INSERT INTO media.media (id, owner_id, filename, mime_type, size_bytes, sha256,"
        " workout_id, caption, width, height)"
        " SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::int8[],"
        " $6::text[], $7::text[], $8::text[], $9::int4[], $10::int4[])"
        " RETURNING id, owner_id, filename, mime_type, size_bytes, sha256,"
        " workout_id, caption, width, height, created_at, broken_at, broken_reason",
        *(list(column) for column in columns))
    return {row["id"]: _item(row) for row in inserted}


async def select_media(connection: asyncpg.Connection, owner_id: UUID,
                       media_id: UUID) -> MediaItem | None:
    row = await connection.fetchrow(
        "SELECT id, owner_id, filename, mime_type, size_bytes, sha256, workout_id,"
        " caption, width, height, created_at, broken_at, broken_reason"
        " FROM media.media WHERE id = $1 AND owner_id = $2",
        media_id, owner_id,
    )
    return _item(row) if row else None


async def select_media_page(connection: asyncpg.Connection, owner_id: UUID, *,
                            workout_id: str | None, limit: int,
                            after: Cursor | None) -> list[MediaItem]:
    """Up to ``limit`` items, newest first, strictly after ``after`` in that order."""
    rows = await connection.fetch(
        "SELECT id, owner_id, filename, mime_type, size_bytes, sha256, workout_id,"
        " caption, width, height, created_at, broken_at, broken_reason FROM media.media"
        " WHERE owner_id = $1"
        " AND ($2::text IS NULL OR workout_id = $2)"
        " AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4::uuid))"
        " ORDER BY created_at DESC, id DESC LIMIT $5",
        owner_id, workout_id, after.created_at if after else None,
        after.id if after else None, limit,
    )
    return [_item(row) for row in rows]


async def select_media_by_sha256s(connection: asyncpg.Connection, owner_id: UUID,
                                  sha256s: list[str]) -> dict[str, MediaItem]:
    """The owner's oldest item with each of these digests, by digest."""
    rows = await connection.fetch(
        "SELECT DISTINCT ON (sha256) id, owner_id, filename, mime_type, size_bytes, sha256,"
        " workout_id, caption, width, height, created_at, broken_at, broken_reason"
        " FROM media.media WHERE owner_id = $1 AND sha256 = ANY($2::text[])"
        " ORDER BY sha256, created_at",
        owner_id, sha256s,
    )
    return {row["sha256"]: _item(row) for row in rows}


_UNSET: Any = object()


async def update_media(connection: asyncpg.Connection, owner_id: UUID, media_id: UUID, *,
                       caption: str | None = _UNSET,
                       workout_id: str | None = _UNSET) -> MediaItem | None:
    row = await connection.fetchrow(
        "UPDATE media.media SET"
        " caption = CASE WHEN $3 THEN $4 ELSE caption END,"
        " workout_id = CASE WHEN $5 THEN $6 ELSE workout_id END"
        " WHERE id = $1 AND owner_id = $2 RETURNING id, owner_id, filename, mime_type,"
        " size_bytes, sha256, workout_id, caption, width, height, created_at, broken_at,"
        " broken_reason",
        media_id, owner_id,
        caption is not _UNSET, None if caption is _UNSET else caption,
        workout_id is not _UNSET, None if workout_id is _UNSET else workout_id,
    )
    return _item(row) if row else None


async def delete_media(connection: asyncpg.Connection, owner_id: UUID,
                       media_id: UUID) -> MediaItem | None:
    row = await connection.fetchrow(
        "DELETE FROM media.media WHERE id = $1 AND owner_id = $2"
        " RETURNING id, owner_id, filename, mime_type, size_bytes, sha256, workout_id,"
        " caption, width, height, created_at, broken_at, broken_reason",
        media_id, owner_id,
    )
    return _item(row) if row else None


async def lock_owner(connection: asyncpg.Connection, owner_id: UUID) -> None:
    """Serialise quota checks of one owner until the transaction ends."""
    await connection.execute("SELECT pg_advisory_xact_lock(hashtext('tempo-media-quota:' || $1))",
                             str(owner_id))


async def owner_usage_bytes(connection: asyncpg.Connection, owner_id: UUID) -> int:
    value = await connection.fetchval(
        "SELECT coalesce(sum(size_bytes), 0) FROM media.media WHERE owner_id = $1", owner_id)
    return int(value)


async def iter_all_media(connection: asyncpg.Connection) -> AsyncIterator[MediaItem]:
    """Every row, oldest first, without loading them all (must run in a transaction)."""
    async for row in connection.cursor(
        "SELECT id, owner_id, filename, mime_type, size_bytes, sha256, workout_id,"
        " caption, width, height, created_at, broken_at, broken_reason"
        " FROM media.media ORDER BY created_at, id"
    ):
        yield _item(row)


async def media_exists(connection: asyncpg.Connection, owner_id: UUID, media_id: UUID) -> bool:
    return bool(await connection.fetchval(
        "SELECT EXISTS (SELECT 1 FROM media.media WHERE id = $1 AND owner_id = $2)",
        media_id, owner_id))


async def mark_broken(connection: asyncpg.Connection, media_id: UUID, reason: str) -> None:
    await connection.execute(
        "UPDATE media.media SET broken_at = now(), broken_reason = $2"
        " WHERE id = $1 AND broken_at IS NULL",
        media_id, reason,
    )


async def clear_broken(connection: asyncpg.Connection, media_id: UUID) -> None:
    await connection.execute(
        "UPDATE media.media SET broken_at = NULL, broken_reason = NULL WHERE id = $1", media_id)
