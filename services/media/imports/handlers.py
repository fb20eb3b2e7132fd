"""HTTP handlers for /imports: upload an archive, follow its progress, cancel it."""

from __future__ import annotations

import asyncio
from uuid import UUID, uuid4

import structlog
from aiohttp import web

from services.media import audit
from services.media.domain import detect_type, parse_media_id
from services.media.imports import store as db
from services.media.imports.archive import ArchiveLimits, looks_like_zip, open_archive
from services.media.imports.worker import IMPORT_WORKER
from services.media.keys import MEDIA_SETTINGS
from services.media.multipart import malformed, open_form, part_chunks, parts
from services.media.storage import Received
from shared.errors import (
    BadRequestError,
    ConflictError,
    NotFoundError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
)
from shared.identity import require_user_id
from shared.keys import DB_POOL
from shared.web import json_response, page_limit

log = structlog.get_logger("media.imports.http")

# Room for the multipart framing around the archive.
FORM_OVERHEAD_BYTES = 64 * 1024
DEFAULT_LIST_LIMIT = 20
MAX_LIST_LIMIT = 100


class TooManyImportsError(ConflictError):
    code = "too_many_imports"


def _import_id(request: web.Request) -> UUID:
    import_id = parse_media_id(request.match_info["id"])
    if import_id is None:
        raise NotFoundError("The import was not found.")
    return import_id


def _require_zip(head: bytes) -> None:
    if not head:
        raise UnsupportedMediaTypeError("The file is empty.", code="empty_file")
    if not looks_like_zip(head):
        detected = detect_type(head) or "unrecognised content"
        raise UnsupportedMediaTypeError(
            f"The file's content is {detected}; an import must be a ZIP archive.",
            code="not_a_zip", detectedType=None if detected.startswith("unrec") else detected)


def _inspect(path: str, limits: ArchiveLimits) -> None:
    from pathlib import Path

    open_archive(Path(path), limits).close()


def _too_many(limit: int) -> TooManyImportsError:
    return TooManyImportsError(f"At most {limit} imports may be queued or running at once; "
                               "wait for one to finish.")


async def create_import(request: web.Request) -> web.Response:
    """Stream the archive to disk, check its structure, queue it: 202, processing later."""
    owner_id = require_user_id(request)
    settings = request.app[MEDIA_SETTINGS].imports
    body_limit = settings.max_file_size_bytes + FORM_OVERHEAD_BYTES
    if request.content_length is not None and request.content_length > body_limit:
        raise PayloadTooLargeError(f"The archive must be at most "
                                   f"{settings.max_file_size_bytes} bytes.",
                                   code="file_too_large")
    pool = request.app[DB_POOL]
    worker = request.app[IMPORT_WORKER]
    async with pool.acquire() as connection:
        if await db.count_active_imports(connection, owner_id) >= settings.max_active_per_user:
            raise _too_many(settings.max_active_per_user)
    reader = await open_form(request)
    record = None
    async for part in parts(reader):
        if part.name != "file":
            raise BadRequestError("The form must hold exactly one part, named 'file'.",
                                  code="unexpected_part")
        async with worker.storage.receive(part_chunks(part),
                                          max_bytes=settings.max_file_size_bytes,
                                          on_head=_require_zip) as received:
            try:
                following = await reader.next()
            except (ValueError, AssertionError, RuntimeError, LookupError):
                raise malformed() from None
            if following is not None:
                raise BadRequestError("The form must hold exactly one part, named 'file'.",
                                      code="unexpected_part")
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, _inspect, str(received.path), settings.limits)
            record = await _queue(request, owner_id, received)
        break
    if record is None:
        raise BadRequestError("The form has no 'file' part.", code="no_file")
    worker.wake()
    log.info("import_queued", import_id=str(record.id), owner_id=str(owner_id),
             archive_bytes=record.archive_bytes)
    # A relative reference: it resolves right both at the service (/imports) and
    # through the gateway (/api/imports).
    return json_response({"id": str(record.id), "status": record.status}, status=202,
                         headers={"Location": f"imports/{record.id}"})


async def _queue(request: web.Request, owner_id: UUID, received: Received) -> db.ImportRecord:
    settings = request.app[MEDIA_SETTINGS].imports
    files = request.app[IMPORT_WORKER].files
    import_id = uuid4()
    final = files.archive_path(owner_id, import_id)
    try:
        async with request.app[DB_POOL].acquire() as connection, connection.transaction():
            await db.lock_owner_imports(connection, owner_id)
            if await db.count_active_imports(connection, owner_id) \
                    >= settings.max_active_per_user:
                raise _too_many(settings.max_active_per_user)
            record = await db.insert_import(connection, id=import_id, owner_id=owner_id,
                                            archive_bytes=received.size)
            await audit.record(connection, audit.Origin.of(request, owner_id),
                               audit.IMPORT_START, audit.SUCCESS, importId=str(import_id),
                               archiveBytes=received.size)
            await files.place(received, final)
    except BaseException:
        if received.placed:
            await files.remove(final)
        raise
    return record


async def get_import(request: web.Request) -> web.Response:
    owner_id = require_user_id(request)
    async with request.app[DB_POOL].acquire() as connection:
        record = await db.select_import(connection, owner_id, _import_id(request))
    if record is None:
        raise NotFoundError("The import was not found.")
    return json_response(record.to_json())


async def list_imports(request: web.Request) -> web.Response:
    owner_id = require_user_id(request)
    limit = page_limit(request.query.get("limit"), default=DEFAULT_LIST_LIMIT,
                       maximum=MAX_LIST_LIMIT)
    async with request.app[DB_POOL].acquire() as connection:
        records = await db.select_imports(connection, owner_id, limit)
    return json_response({"items": [record.to_json() for record in records]})


async def delete_import(request: web.Request) -> web.Response:
    """Cancel a queued or running import and remove its archive; what it already stored
    stays (a later import of the same archive completes it without duplicates)."""
    owner_id = require_user_id(request)
    import_id = _import_id(request)
    pool = request.app[DB_POOL]
    worker = request.app[IMPORT_WORKER]
    async with pool.acquire() as connection:
        record = await db.cancel_import(connection, owner_id, import_id)
        if record is not None:
            await audit.record(connection, audit.Origin.of(request, owner_id),
                               audit.IMPORT_END, audit.CANCELLED, importId=str(import_id))
        else:
            record = await db.select_import(connection, owner_id, import_id)
            if record is None:
                raise NotFoundError("The import was not found.")
            if record.status != db.CANCELLED:
                raise ConflictError(f"The import has already ended ({record.status}).",
                                    code="import_finished")
    if not await worker.interrupt(import_id):
        # Not running here: queued, or running in another process, whose next progress
        # save sees the cancellation and stops.
        await worker.files.remove(worker.files.archive_path(owner_id, import_id))
        async with pool.acquire() as connection:
            await db.set_archive_absent(connection, import_id)
    async with pool.acquire() as connection:
        record = await db.select_import(connection, owner_id, import_id)
    assert record is not None
    return json_response(record.to_json())


def setup_import_routes(app: web.Application) -> None:
    from services.media.export import get_export

    app.router.add_post("/imports", create_import)
    app.router.add_get("/imports", list_imports, allow_head=False)
    app.router.add_get("/imports/{id}", get_import, allow_head=False)
    app.router.add_delete("/imports/{id}", delete_import)
    app.router.add_get("/export", get_export, allow_head=False)
