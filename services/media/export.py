"""GET /export: everything a user owns as one ZIP, streamed as it is made.

The archive holds ``manifest.json`` (format, version, media metadata, activities,
imports), every media file under ``media/`` and every activity file under
``activities/``, named only by ids. It is produced by zipstream-ng while it is sent:
nothing is assembled in memory or in a temporary file, and files are read chunk by
chunk in an executor. The manifest is what lets the importer recognise the archive and
restore it elsewhere with the same bytes and metadata.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import structlog
import zipstream
from aiohttp import web

from services.media import audit, store
from services.media.domain import ALLOWED_TYPES
from services.media.imports import store as db
from services.media.imports.files import ImportFiles
from services.media.imports.manifest import MANIFEST_FORMAT, MANIFEST_NAME, MANIFEST_VERSION
from services.media.keys import STORAGE
from services.media.storage import MediaStorage
from shared.identity import require_user_id
from shared.keys import DB_POOL

log = structlog.get_logger("media.export")

CHUNK_SIZE = 256 * 1024


def media_arcname(item: store.MediaItem) -> str:
    extensions = ALLOWED_TYPES[item.mime_type].extensions if item.mime_type in ALLOWED_TYPES \
        else frozenset({"bin"})
    extension = "jpg" if "jpg" in extensions else sorted(extensions)[0]
    return f"media/{item.id}.{extension}"


def activity_arcname(activity: db.Activity) -> str:
    return f"activities/{activity.id}.{activity.file_format}"


def _activity_json(activity: db.Activity, path: str | None) -> dict[str, Any]:
    return {
        "id": str(activity.id),
        "stravaId": activity.strava_id,
        "startedAt": activity.started_at.isoformat() if activity.started_at else None,
        "name": activity.name,
        "type": activity.activity_type,
        "distanceMeters": activity.distance_meters,
        "elapsedSeconds": activity.elapsed_seconds,
        "format": activity.file_format,
        "filename": activity.filename,
        "sizeBytes": activity.size_bytes,
        "sha256": activity.sha256,
        "importId": str(activity.import_id) if activity.import_id else None,
        "path": path,
    }


async def _gather(pool, owner_id: UUID) -> tuple[list[store.MediaItem], list[db.Activity],
                                                  list[db.ImportRecord], dict[UUID, UUID]]:
    async with pool.acquire() as connection:
        media = await db.select_owner_media(connection, owner_id)
        activities = await db.select_activities(connection, owner_id)
        imports = await db.select_owner_imports_for_export(connection, owner_id)
        origins = await db.select_owner_import_media(connection, owner_id)
    return media, activities, imports, origins


def _build(storage: MediaStorage, files: ImportFiles, owner_id: UUID,
           media: list[store.MediaItem], activities: list[db.Activity],
           imports: list[db.ImportRecord], origins: dict[UUID, UUID]) -> zipstream.ZipStream:
    """Queue every file (by path: read only while streaming) and the manifest (blocking)."""
    archive = zipstream.ZipStream(compress_type=zipstream.ZIP_STORED, sized=False)
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "exportedAt": datetime.now(UTC).isoformat(),
        "media": [],
        "activities": [],
        "imports": [record.to_json() for record in imports],
    }
    queued: list[tuple[Path, str]] = []
    for item in media:
        path = storage.path_for(owner_id, item.id)
        if not os.path.isfile(path):
            log.warning("export_media_file_missing", media_id=str(item.id))
            continue
        arcname = media_arcname(item)
        origin = origins.get(item.id)
        manifest["media"].append({**item.to_json(), "path": arcname,
                                  "importId": str(origin) if origin else None})
        queued.append((path, arcname))
    for activity in activities:
        arcname = None
        if activity.sha256 is not None:
            path = files.activity_path(owner_id, activity.id)
            if os.path.isfile(path):
                arcname = activity_arcname(activity)
                queued.append((path, arcname))
            else:
                log.warning("export_activity_file_missing", activity_id=str(activity.id))
        manifest["activities"].append(_activity_json(activity, arcname))
    archive.add(json.dumps(manifest, indent=1).encode(), MANIFEST_NAME,
                compress_type=zipstream.ZIP_DEFLATED)
    for path, arcname in queued:
        archive.add_path(str(path), arcname, recurse=False)
    return archive


async def get_export(request: web.Request) -> web.StreamResponse:
    owner_id = require_user_id(request)
    origin = audit.Origin.of(request, owner_id)
    recorded = False

    async def record(outcome: str, **counts: int) -> None:
        nonlocal recorded
        recorded = True
        await audit.record_in_pool(request.app[DB_POOL], origin, audit.EXPORT, outcome,
                                   **counts)

    try:
        return await _send_export(request, owner_id, record)
    except BaseException:
        # One record whatever happened: a download cut short is an attempt, not nothing.
        # If the database is what failed, the log line is all that can be kept.
        if not recorded:
            with contextlib.suppress(Exception):
                await record(audit.FAILURE)
        raise


async def _send_export(request: web.Request, owner_id: UUID,
                       record: Callable[..., Awaitable[None]]) -> web.StreamResponse:
    storage = request.app[STORAGE]
    files = ImportFiles(storage)
    media, activities, imports, origins = await _gather(request.app[DB_POOL], owner_id)
    loop = asyncio.get_running_loop()
    archive = await loop.run_in_executor(None, _build, storage, files, owner_id, media,
                                         activities, imports, origins)
    stamp = datetime.now(UTC).strftime("%Y%m%d")
    response = web.StreamResponse(status=200, headers={
        "Content-Type": "application/zip",
        "Content-Disposition": f'attachment; filename="tempo-export-{stamp}.zip"',
        "Cache-Control": "private, no-store",
        "X-Content-Type-Options": "nosniff",
    })
    await response.prepare(request)
    chunks: Iterator[bytes] = iter(archive)
    written = 0
    try:
        while True:
            chunk = await loop.run_in_executor(None, next, chunks, None)
            if chunk is None:
                break
            written += len(chunk)
            await response.write(chunk)
    except OSError:
        # The headers are gone; all that is left is to end the connection short, which
        # the client sees as a broken download rather than a complete one.
        log.exception("export_aborted", owner_id=str(owner_id), bytes=written)
        raise
    # Recorded before the last bytes go: once the client has the whole archive, the
    # record of it exists.
    await record(audit.SUCCESS, media=len(media), activities=len(activities), bytes=written)
    await response.write_eof()
    log.info("export_sent", owner_id=str(owner_id), media=len(media),
             activities=len(activities), bytes=written)
    return response
