"""The one path by which bytes become a stored media item.

Uploads feed it the chunks of a multipart part; the archive import feeds it the chunks
of a ZIP entry. Both get the same allow-list, size limit, sniffing, quota, naming and
atomicity, because both go through ``ingest_media``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, Iterable
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import structlog
from prometheus_client import Counter

from services.media import store
from services.media.domain import (
    MediaType,
    check_content,
    image_dimensions,
    sanitize_filename,
    validate_caption,
    validate_workout_id,
)
from services.media.settings import StorageSettings
from services.media.storage import MediaStorage, Received, SizeLimitExceededError, settled
from shared.errors import ConflictError, PayloadTooLargeError, ServiceError, ValidationError

log = structlog.get_logger("media.ingest")

# Outcomes are "stored" or a refusal's stable error code, so the label set stays small.
INGESTED = Counter("tempo_media_ingested_total", "Files offered for storage, by outcome",
                   ["outcome"])
STORED_BYTES = Counter("tempo_media_stored_bytes_total", "Bytes of media stored")


@dataclass(frozen=True, slots=True)
class UploadLimits:
    max_file_size_bytes: int
    # Total stored bytes per owner; None for no quota.
    quota_bytes: int | None = None

    @classmethod
    def from_settings(cls, storage: StorageSettings) -> UploadLimits:
        return cls(storage.max_file_size_bytes, storage.quota_bytes)


class QuotaExceededError(PayloadTooLargeError):
    code = "quota_exceeded"
    message = "The storage quota would be exceeded."


class DuplicateMediaError(ConflictError):
    """Raised instead of storing when ``deduplicate`` finds the same bytes already stored."""

    code = "duplicate_media"

    def __init__(self, existing: store.MediaItem) -> None:
        super().__init__("An identical file is already stored.", mediaId=str(existing.id))
        self.existing = existing


async def ingest_media(
    chunks: AsyncIterable[bytes],
    *,
    filename: str | None,
    owner_id: UUID,
    pool: asyncpg.Pool,
    storage: MediaStorage,
    limits: UploadLimits,
    workout_id: str | None = None,
    caption: str | None = None,
    declared_type: str | None = None,
    declared_size: int | None = None,
    deduplicate: bool = False,
) -> store.MediaItem:
    """Stream ``chunks`` into storage as a new media item owned by ``owner_id``.

    ``chunks`` is any async iterable of ``bytes`` (a multipart part, a ZIP entry being
    inflated); memory use is bounded by the size of one chunk. ``filename`` is the
    client's name, used only (sanitised) as display text and for the extension check.
    ``declared_type`` is what the sender claimed (logged, never trusted);
    ``declared_size``, when known in advance, is refused before a byte is written if it
    is over the size limit or the remaining quota. With ``deduplicate``, bytes identical
    to an item the owner already has are not stored again: ``DuplicateMediaError``
    carries the existing item.

    Returns the stored item. Raises a ``ServiceError``: ``ValidationError`` (400) for a
    missing name or a bad ``workout_id``/``caption``, ``UnsupportedMediaTypeError`` (415)
    for content off the allow-list, empty, markup-carrying or misnamed,
    ``SizeLimitExceededError``/``QuotaExceededError`` (413), ``DuplicateMediaError``
    (409). On any failure or cancellation nothing is left behind: no temporary file, no
    stored file, no row. The caller must stop feeding the source after an error; it
    need not drain it.
    """
    display_name = sanitize_filename(filename)
    try:
        item = await _ingest(chunks, display_name=display_name, owner_id=owner_id, pool=pool,
                             storage=storage, limits=limits, workout_id=workout_id,
                             caption=caption, declared_size=declared_size,
                             deduplicate=deduplicate)
    except BaseException as exc:
        INGESTED.labels(exc.code if isinstance(exc, ServiceError) else "error").inc()
        log.info("media_not_stored", code=getattr(exc, "code", type(exc).__name__),
                 filename=display_name, declared_type=declared_type, owner_id=str(owner_id))
        raise
    INGESTED.labels("stored").inc()
    STORED_BYTES.inc(item.size_bytes)
    log.info("media_stored", media_id=str(item.id), owner_id=str(owner_id),
             mime_type=item.mime_type, declared_type=declared_type, size_bytes=item.size_bytes)
    return item


async def _ingest(chunks: AsyncIterable[bytes], *, display_name: str, owner_id: UUID,
                  pool: asyncpg.Pool, storage: MediaStorage, limits: UploadLimits,
                  workout_id: str | None, caption: str | None, declared_size: int | None,
                  deduplicate: bool) -> store.MediaItem:
    if not display_name:
        raise ValidationError("filename", "The file has no usable file name.",
                              code="missing_filename")
    workout_id = validate_workout_id(workout_id)
    caption = validate_caption(caption)

    max_bytes = limits.max_file_size_bytes
    if declared_size is not None and declared_size > max_bytes:
        raise SizeLimitExceededError(max_bytes)
    remaining: int | None = None
    if limits.quota_bytes is not None:
        async with pool.acquire() as connection:
            used = await store.owner_usage_bytes(connection, owner_id)
        remaining = limits.quota_bytes - used
        if remaining <= 0 or (declared_size is not None and declared_size > remaining):
            raise QuotaExceededError()
        max_bytes = min(max_bytes, remaining)

    media_types: list[MediaType] = []

    def check_head(head: bytes) -> None:
        media_types.append(check_content(head, display_name))

    try:
        async with storage.receive(chunks, max_bytes=max_bytes, on_head=check_head) as received:
            return await _commit_or_nothing(
                received, media_types[0], owner_id=owner_id, filename=display_name,
                pool=pool, storage=storage, limits=limits, workout_id=workout_id,
                caption=caption, deduplicate=deduplicate,
            )
    except SizeLimitExceededError as exc:
        # The stream was cut at the remaining quota rather than at the size limit.
        if remaining is not None and exc.limit == remaining < limits.max_file_size_bytes:
            raise QuotaExceededError() from None
        raise


async def _commit_or_nothing(received: Received, media_type: MediaType, *,
                             owner_id: UUID, pool: asyncpg.Pool, storage: MediaStorage,
                             **details: Any) -> store.MediaItem:
    """``_commit``, run to its end even when cancelled; a cancelled caller never learns of
    the item, so an item that committed anyway is removed again."""
    commit = asyncio.ensure_future(_commit(received, media_type, owner_id=owner_id,
                                           pool=pool, storage=storage, **details))
    try:
        return await asyncio.shield(commit)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            await asyncio.wait([commit])
        if commit.done() and not commit.cancelled() and commit.exception() is None:
            await settled(delete_media(pool, storage, owner_id, commit.result().id))
        raise


async def _commit(received: Received, media_type: MediaType, *, owner_id: UUID,
                  filename: str, pool: asyncpg.Pool, storage: MediaStorage,
                  limits: UploadLimits, workout_id: str | None, caption: str | None,
                  deduplicate: bool) -> store.MediaItem:
    """Insert the row, rename the file into place, commit; undo the file if it fails."""
    media_id = uuid4()
    dimensions = image_dimensions(media_type.mime, received.head)
    try:
        async with pool.acquire() as connection, connection.transaction():
            if limits.quota_bytes is not None:
                await store.lock_owner(connection, owner_id)
                used = await store.owner_usage_bytes(connection, owner_id)
                if used + received.size > limits.quota_bytes:
                    raise QuotaExceededError()
            if deduplicate:
                existing = await store.select_media_by_sha256(connection, owner_id,
                                                              received.sha256)
                if existing is not None:
                    raise DuplicateMediaError(existing)
            item = await store.insert_media(
                connection, id=media_id, owner_id=owner_id, filename=filename,
                mime_type=media_type.mime, size_bytes=received.size, sha256=received.sha256,
                workout_id=workout_id, caption=caption,
                width=dimensions[0] if dimensions else None,
                height=dimensions[1] if dimensions else None,
            )
            await storage.place(received, owner_id, media_id)
    except BaseException:
        if received.placed:
            # The row never committed, so the file it would have described must go.
            await storage.remove(owner_id, media_id)
            received.placed = False
        raise
    return item


async def delete_media(pool: asyncpg.Pool, storage: MediaStorage, owner_id: UUID,
                       media_id: UUID) -> bool:
    """Remove the row, then the file; False when the owner has no such item.

    A failure between the two leaves a file without a row, which the sweeper reports and
    ``fsck --repair`` removes.
    """
    async with pool.acquire() as connection:
        item = await store.delete_media(connection, owner_id, media_id)
    if item is None:
        return False
    if not await storage.remove(owner_id, media_id):
        log.warning("media_file_already_missing", media_id=str(media_id),
                    owner_id=str(owner_id))
    return True


async def discard_media(pool: asyncpg.Pool, storage: MediaStorage, owner_id: UUID,
                        media_ids: Iterable[UUID]) -> None:
    """Undo items stored earlier in a request that failed as a whole (survives cancel)."""
    ids = list(media_ids)
    if not ids:
        return

    async def discard() -> None:
        for media_id in ids:
            await delete_media(pool, storage, owner_id, media_id)

    await settled(asyncio.ensure_future(discard()))


class MediaIngestor:
    """``ingest_media`` bound to one service's pool, storage and limits."""

    def __init__(self, pool: asyncpg.Pool, storage: MediaStorage, limits: UploadLimits) -> None:
        self.pool = pool
        self.storage = storage
        self.limits = limits

    async def ingest(self, chunks: AsyncIterable[bytes], *, filename: str | None,
                     owner_id: UUID, workout_id: str | None = None,
                     caption: str | None = None, declared_type: str | None = None,
                     declared_size: int | None = None,
                     deduplicate: bool = False) -> store.MediaItem:
        """See ``ingest_media``."""
        return await ingest_media(
            chunks, filename=filename, owner_id=owner_id, pool=self.pool,
            storage=self.storage, limits=self.limits, workout_id=workout_id,
            caption=caption, declared_type=declared_type, declared_size=declared_size,
            deduplicate=deduplicate,
        )

    async def delete(self, owner_id: UUID, media_id: UUID) -> bool:
        return await delete_media(self.pool, self.storage, owner_id, media_id)

    async def discard(self, owner_id: UUID, media_ids: Iterable[UUID]) -> None:
        await discard_media(self.pool, self.storage, owner_id, media_ids)
