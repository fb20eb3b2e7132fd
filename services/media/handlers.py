"""HTTP handlers for /media: parse the request, call ingest/store, write the answer."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any, BinaryIO
from uuid import UUID

import structlog
from aiohttp import hdrs, web

from services.media import audit, store
from services.media.domain import (
    ByteRange,
    Cursor,
    content_disposition,
    decode_cursor,
    encode_cursor,
    etag_for,
    if_range_allows,
    none_match,
    parse_limit,
    parse_media_id,
    parse_range,
    sanitize_filename,
    validate_caption,
    validate_workout_id,
)
from services.media.keys import INGESTOR, MEDIA_SETTINGS, STORAGE
from services.media.multipart import (
    drain,
    open_form,
    part_chunks,
    part_head,
    parts,
    read_field,
)
from services.media.storage import READ_CHUNK_BYTES
from shared.audit import page_json, page_query
from shared.errors import (
    BadRequestError,
    NotFoundError,
    PayloadTooLargeError,
    ServiceError,
    ValidationError,
)
from shared.identity import require_user_id
from shared.keys import DB_POOL, REQUEST_ID
from shared.web import json_response, problem_response, read_json

log = structlog.get_logger("media.http")

# Room for the multipart framing and the text fields around the files.
FORM_OVERHEAD_BYTES = 1024 * 1024
MAX_TEXT_PARTS = 16
TEXT_FIELDS = ("workoutId", "caption")
PATCHABLE_FIELDS = frozenset(TEXT_FIELDS)

SERVED_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "sandbox; default-src 'none'",
    "Cache-Control": "private",
    "Accept-Ranges": "bytes",
}


def _media_id(request: web.Request) -> UUID:
    media_id = parse_media_id(request.match_info["id"])
    if media_id is None:
        raise NotFoundError("The media item was not found.")
    return media_id


async def _item_or_404(request: web.Request, owner_id: UUID, media_id: UUID) -> store.MediaItem:
    async with request.app[DB_POOL].acquire() as connection:
        item = await store.select_media(connection, owner_id, media_id)
    if item is None:
        raise NotFoundError("The media item was not found.")
    return item


# --- POST /media ---------------------------------------------------------------------

class TooManyFilesError(PayloadTooLargeError):
    code = "too_many_files"


def _file_error(filename: str | None, exc: ServiceError) -> dict[str, Any]:
    return {**exc.extra, "filename": sanitize_filename(filename), "code": exc.code,
            "message": exc.message, "status": exc.status}


async def create_media(request: web.Request) -> web.Response:
    """Store each ``file`` part on its own; the request fails as a whole only when its
    framing does (malformed body, too many files, too large overall, client gone), and
    then every item it had stored is removed again.

    ``workoutId`` and ``caption`` apply to every file and must come before the first file
    part: files are stored as they stream past, so a field arriving later could no longer
    apply to them.
    """
    owner_id = require_user_id(request)
    limits = request.app[MEDIA_SETTINGS].storage
    body_limit = limits.max_files_per_request * limits.max_file_size_bytes + FORM_OVERHEAD_BYTES
    if request.content_length is not None and request.content_length > body_limit:
        raise PayloadTooLargeError(f"The request body must be at most {body_limit} bytes.")
    ingestor = request.app[INGESTOR]
    reader = await open_form(request)

    fields: dict[str, str | None] = {}
    items: list[store.MediaItem] = []
    errors: list[dict[str, Any]] = []
    files_seen = 0
    text_parts = 0
    try:
        async for part in parts(reader):
            head = part_head(part)
            if head.name == "file":
                files_seen += 1
                if files_seen > limits.max_files_per_request:
                    raise TooManyFilesError(
                        f"At most {limits.max_files_per_request} files may be sent at once.")
                try:
                    item = await ingestor.ingest(
                        part_chunks(part), filename=head.filename, owner_id=owner_id,
                        workout_id=fields.get("workoutId"), caption=fields.get("caption"),
                        declared_type=head.declared_type,
                    )
                except ServiceError as exc:
                    if not 400 <= exc.status < 500:
                        raise
                    errors.append(_file_error(head.filename, exc))
                    await drain(part, request, body_limit)
                else:
                    items.append(item)
            else:
                text_parts += 1
                if text_parts > MAX_TEXT_PARTS:
                    raise BadRequestError("The form has too many fields.", code="too_many_fields")
                value = await read_field(part, head.name)
                if head.name in TEXT_FIELDS:
                    if files_seen:
                        raise BadRequestError(
                            f"The field '{head.name}' must come before the file parts.",
                            code="field_after_file")
                    fields[head.name] = (validate_workout_id(value) if head.name == "workoutId"
                                         else validate_caption(value))
            if request.content.total_bytes > body_limit:
                raise PayloadTooLargeError(
                    f"The request body must be at most {body_limit} bytes.")
        if files_seen == 0:
            raise BadRequestError("The form has no 'file' part.", code="no_file")
    except BaseException:
        await ingestor.discard(owner_id, (item.id for item in items))
        raise

    if not items:
        first = errors[0]
        extra = {key: value for key, value in first.items()
                 if key not in {"filename", "code", "message", "status"}}
        return problem_response(first["status"], first["code"], first["message"],
                                request_id=request.get(REQUEST_ID),
                                extra={**extra, "errors": errors})
    return json_response({"items": [item.to_json() for item in items], "errors": errors},
                         status=201)


# --- reading -------------------------------------------------------------------------

async def list_media(request: web.Request) -> web.Response:
    owner_id = require_user_id(request)
    query = request.query
    workout_id = validate_workout_id(query.get("workoutId"))
    limit = parse_limit(query.get("limit"))
    cursor = decode_cursor(query["cursor"]) if query.get("cursor") else None
    async with request.app[DB_POOL].acquire() as connection:
        rows = await store.select_media_page(connection, owner_id, workout_id=workout_id,
                                             limit=limit + 1, after=cursor)
    page = rows[:limit]
    next_cursor = None
    if len(rows) > limit:
        last = page[-1]
        next_cursor = encode_cursor(Cursor(last.created_at, last.id))
    return json_response({"items": [item.to_json() for item in page], "nextCursor": next_cursor})


async def get_media(request: web.Request) -> web.Response:
    owner_id = require_user_id(request)
    item = await _item_or_404(request, owner_id, _media_id(request))
    return json_response(item.to_json())


def _content_unavailable() -> NotFoundError:
    return NotFoundError("The media content is not available.", code="content_unavailable")


async def get_media_content(request: web.Request) -> web.StreamResponse:
    owner_id = require_user_id(request)
    media_id = _media_id(request)
    item = await _item_or_404(request, owner_id, media_id)
    if item.broken_at is not None:
        raise _content_unavailable()
    etag = etag_for(item.sha256)
    headers = {
        **SERVED_HEADERS,
        "ETag": etag,
        "Content-Disposition": content_disposition(item.filename, item.mime_type),
    }
    if none_match(request.headers.get(hdrs.IF_NONE_MATCH), etag):
        return web.Response(status=304, headers=headers)

    byte_range: ByteRange | None = None
    if if_range_allows(request.headers.get(hdrs.IF_RANGE), etag):
        byte_range = parse_range(request.headers.get(hdrs.RANGE), item.size_bytes)

    path = request.app[STORAGE].path_for(owner_id, media_id)
    loop = asyncio.get_running_loop()
    try:
        handle = await loop.run_in_executor(None, _open_for_reading, path)
    except FileNotFoundError:
        log.error("media_file_missing", media_id=str(media_id), owner_id=str(owner_id))
        raise _content_unavailable() from None
    try:
        actual_size = os.fstat(handle.fileno()).st_size
        if actual_size != item.size_bytes:
            log.error("media_file_size_mismatch", media_id=str(media_id),
                      expected=item.size_bytes, actual=actual_size)
            raise _content_unavailable()
        start, length = 0, item.size_bytes
        response = web.StreamResponse(status=200, headers=headers)
        if byte_range is not None:
            start, length = byte_range.start, byte_range.length
            response.set_status(206)
            response.headers["Content-Range"] = (
                f"bytes {byte_range.start}-{byte_range.end}/{item.size_bytes}")
        response.content_type = item.mime_type
        response.content_length = length
        await response.prepare(request)
        if request.method != hdrs.METH_HEAD:
            remaining = length
            offset = start
            while remaining > 0:
                chunk = await loop.run_in_executor(None, os.pread, handle.fileno(),
                                                   min(READ_CHUNK_BYTES, remaining), offset)
                if not chunk:
                    break
                remaining -= len(chunk)
                offset += len(chunk)
                await response.write(chunk)
        await response.write_eof()
        return response
    finally:
        # Closing a file opened for reading does not block; doing it here, not in an
        # executor, means it happens even when the handler is cancelled.
        handle.close()


def _open_for_reading(path: Path) -> BinaryIO:
    return path.open("rb")


# --- changing ------------------------------------------------------------------------

async def update_media(request: web.Request) -> web.Response:
    owner_id = require_user_id(request)
    media_id = _media_id(request)
    data = await read_json(request)
    unknown = sorted(set(data) - PATCHABLE_FIELDS)
    if unknown:
        raise ValidationError(unknown[0], f"'{unknown[0]}' cannot be changed.",
                              code="unknown_field")
    if not data:
        raise BadRequestError("Nothing to change: send 'caption' and/or 'workoutId'.",
                              code="empty_update")
    changes: dict[str, str | None] = {}
    for field, key, validate in (("caption", "caption", validate_caption),
                                 ("workoutId", "workout_id", validate_workout_id)):
        if field in data:
            value = data[field]
            if value is not None and not isinstance(value, str):
                raise ValidationError(field, f"'{field}' must be a string or null.",
                                      code="invalid_field")
            changes[key] = validate(value)
    async with request.app[DB_POOL].acquire() as connection:
        item = await store.update_media(connection, owner_id, media_id, **changes)
    if item is None:
        raise NotFoundError("The media item was not found.")
    return json_response(item.to_json())


async def delete_media(request: web.Request) -> web.Response:
    owner_id = require_user_id(request)
    media_id = _media_id(request)
    deleted = await request.app[INGESTOR].delete(owner_id, media_id)
    await audit.record_in_pool(request.app[DB_POOL], audit.Origin.of(request, owner_id),
                               audit.MEDIA_DELETE, audit.SUCCESS if deleted else audit.NOT_FOUND,
                               mediaId=str(media_id))
    if not deleted:
        raise NotFoundError("The media item was not found.")
    return web.Response(status=204)


async def get_audit(request: web.Request) -> web.Response:
    """The caller's media audit records, newest first; ``limit`` and ``cursor`` page them."""
    owner_id = require_user_id(request)
    limit, after = page_query(request)
    async with request.app[DB_POOL].acquire() as connection:
        entries = await audit.select_page(connection, owner_id, limit, after)
    return json_response(page_json(entries, limit, "media"))
