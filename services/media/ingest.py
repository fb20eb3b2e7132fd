"""The one path by which bytes become a stored media item.

Uploads feed it the chunks of a multipart part; the archive import feeds it the chunks
of a ZIP entry. Both get the same allow-list, size limit, sniffing, quota, naming and
atomicity, because both go through ``ingest_media``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from dataclasses import dataclass
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


# Commits one received file: ``_commit_or_nothing`` bound to a pool and storage, or an
# import's batch. Returns the stored item, or raises as ``ingest_media`` documents.
CommitMedia = Callable[[Received, store.NewMedia, bool], Awaitable[store.MediaItem]]


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
    commit: CommitMedia | None = None,
) -> store.MediaItem:
    """Stream ``chunks`` into storage as a new media item owned by ``owner_id``.

    ``chunks`` is any async iterable of ``bytes`` (a multipart part, a ZIP entry being
    inflated); memory use is bounded by the size of one chunk. ``filename`` is the
    client's name, used only (sanitised) as display text and for the extension check.
    ``declared_type`` is what the sender claimed (logged, never trusted);
    ``declared_size``, when known in advance, is refused before a byte is written if it
    is over the size limit or the remaining quota. With ``deduplicate``, bytes identical
    to an item the owner already has are not stored again: ``DuplicateMediaError``
    carries the existing item. ``commit``, when given, stores the received file instead
    of a transaction of its own (an import's batches); it applies ``commit_media_rows``
    and gives the same guarantees.

    Returns the stored item. Raises a ``ServiceError``: ``ValidationError`` (400) for a
    missing name or a bad ``workout_id``/``caption``, ``UnsupportedMediaTypeError`` (415)
    for content off the allow-list, empty, markup-carrying or misnamed,
    ``SizeLimitExceededError``/``QuotaExceededError`` (413), ``DuplicateMediaError``
    (409). On any failure or cancellation nothing is left behind: no temporary file, no
    stored file, no row. The caller must stop feeding the source after an error; it
    need not drain it.
    """
    display_name = sanitize_filename(filename)
    if commit is None:
        commit = functools.partial(_commit_or_nothing, pool=pool, storage=storage,
                                   limits=limits)
    try:
        item = await _ingest(chunks, display_name=display_name, owner_id=owner_id, pool=pool,
                             storage=storage, limits=limits, workout_id=workout_id,
                             caption=caption, declared_size=declared_size,
                             deduplicate=deduplicate, commit=commit)
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
                  deduplicate: bool, commit: CommitMedia) -> store.MediaItem:
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
            mime = media_types[0].mime
            dimensions = image_dimensions(mime, received.head)
            row = store.NewMedia(
                id=uuid4(), owner_id=owner_id, filename=display_name, mime_type=mime,
                size_bytes=received.size, sha256=received.sha256, workout_id=workout_id,
                caption=caption, width=dimensions[0] if dimensions else None,
                height=dimensions[1] if dimensions else None)
            return await commit(received, row, deduplicate)
    except SizeLimitExceededError as exc:
        # The stream was cut at the remaining quota rather than at the size limit.
        if remaining is not None and exc.limit == remaining < limits.max_file_size_bytes:
            raise QuotaExceededError() from None
        raise


async def commit_media_rows(connection: asyncpg.Connection, rows: list[store.NewMedia], *,
                            quota_bytes: int | None, deduplicate: bool
                            ) -> list[store.MediaItem | ServiceError]:
    """Insert the rows that pass the owner's quota and, with ``deduplicate``, are not
    bytes the owner already has (in the open transaction); per row, the inserted item or
    the refusal (``QuotaExceededError``, ``DuplicateMediaError``), so that one refused
    row does not fail the others. The quota is checked first, then duplicates, in row
    order, as for rows committed one by one."""
    outcomes: list[store.MediaItem | ServiceError | None] = [None] * len(rows)
    by_owner: dict[UUID, list[int]] = {}
    for index, row in enumerate(rows):
        by_owner.setdefault(row.owner_id, []).append(index)
    accepted: list[int] = []
    # index of a row → the earlier row of the same batch with the same bytes.
    copies: dict[int, int] = {}
    for owner_id, indices in by_owner.items():
        used: int | None = None
        if quota_bytes is not None:
            await store.lock_owner(connection, owner_id)
            used = await store.owner_usage_bytes(connection, owner_id)
        existing = (await store.select_media_by_sha256s(
            connection, owner_id, sorted({rows[index].sha256 for index in indices}))
                    if deduplicate else {})
        first_in_batch: dict[str, int] = {}
        for index in indices:
            row = rows[index]
            if used is not None and quota_bytes is not None \
                    and used + row.size_bytes > quota_bytes:
                outcomes[index] = QuotaExceededError()
                continue
            if deduplicate:
                earlier = existing.get(row.sha256)
                if earlier is not None:
                    outcomes[index] = DuplicateMediaError(earlier)
                    continue
                if row.sha256 in first_in_batch:
                    copies[index] = first_in_batch[row.sha256]
                    continue
                first_in_batch[row.sha256] = index
            if used is not None:
                used += row.size_bytes
            accepted.append(index)
    items = await store.insert_media_rows(connection, [rows[index] for index in accepted])
    for index in accepted:
        outcomes[index] = items[rows[index].id]
    for index, first in copies.items():
        outcomes[index] = DuplicateMediaError(items[rows[first].id])
    return [outcome for outcome in outcomes if outcome is not None]


async def _commit_or_nothing(received: Received, row: store.NewMedia, deduplicate: bool, *,
                             pool: asyncpg.Pool, storage: MediaStorage,
                             limits: UploadLimits) -> store.MediaItem:
    """``_commit``, run to its end even when cancelled; a cancelled caller never learns of
    the item, so an item that committed anyway is removed again."""
    commit = asyncio.ensure_future(_commit(received, row, deduplicate, pool=pool,
                                           storage=storage, limits=limits))
    try:
        return await asyncio.shield(commit)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            await asyncio.wait([commit])
        if commit.done() and not commit.cancelled() and commit.exception() is None:
            await settled(delete_media(pool, storage, row.owner_id, commit.result().id))
        raise


async def _commit(received: Received, row: store.NewMedia, deduplicate: bool, *,
                  pool: asyncpg.Pool, storage: MediaStorage,
                  limits: UploadLimits) -> store.MediaItem:
    """Insert the row, rename the file into place, commit; undo the file if it fails."""
    committed = False
    try:
        async with pool.acquire() as connection:
            async with connection.transaction():
                (outcome,) = await commit_media_rows(connection, [row],
                                                     quota_bytes=limits.quota_bytes,
                                                     deduplicate=deduplicate)
                if isinstance(outcome, ServiceError):
                    raise outcome
                await storage.place(received, row.owner_id, row.id)
            # A failure from here on (handing the connection back) leaves the row
            # committed, so its file must stay.
            committed = True
    except BaseException:
        if received.placed and not committed:
            # The row never committed, so the file it would have described must go.
            await storage.remove(row.owner_id, row.id)
            received.placed = False
        raise
    return outcome


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
                     declared_size: int | None = None, deduplicate: bool = False,
                     commit: CommitMedia | None = None) -> store.MediaItem:
        """See ``ingest_media``."""
        return await ingest_media(
            chunks, filename=filename, owner_id=owner_id, pool=self.pool,
            storage=self.storage, limits=self.limits, workout_id=workout_id,
            caption=caption, declared_type=declared_type, declared_size=declared_size,
            deduplicate=deduplicate, commit=commit,
        )

    async def delete(self, owner_id: UUID, media_id: UUID) -> bool:
        return await delete_media(self.pool, self.storage, owner_id, media_id)

    async def discard(self, owner_id: UUID, media_ids: Iterable[UUID]) -> None:
        await discard_media(self.pool, self.storage, owner_id, media_ids)
