"""The media service's application factory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from services.media.imports.worker import import_worker_context
from services.media.ingest import MediaIngestor, UploadLimits
from services.media.keys import INGESTOR, MEDIA_SETTINGS, STORAGE
from services.media.routes import setup_routes
from services.media.settings import SERVICE, MediaSettings
from services.media.storage import MediaStorage
from services.media.sweeper import sweeper_context
from shared.audit import purge_context as audit_purge_context
from shared.db import database_context
from shared.identity import internal_identity_middleware
from shared.keys import COMMON_SETTINGS, DB_POOL
from shared.metrics import metrics_listener
from shared.web import error_middleware, request_id_middleware, trust_always

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
PUBLIC_PATHS = ("/health", "/ready")


async def storage_context(app: web.Application) -> AsyncIterator[None]:
    """Create the storage root and temporary area, and the ingestor that writes to them."""
    storage = app[STORAGE]
    await asyncio.get_running_loop().run_in_executor(None, storage.prepare)
    app[INGESTOR] = MediaIngestor(app[DB_POOL], storage,
                                  UploadLimits.from_settings(app[MEDIA_SETTINGS].storage))
    yield


def create_app(settings: MediaSettings) -> web.Application:
    middlewares = [
        # The only caller is the gateway, which sends the request id it assigned.
        request_id_middleware(trust_always),
        error_middleware,
        internal_identity_middleware(settings.common.internal_keys, SERVICE,
                                     public_paths=PUBLIC_PATHS),
    ]
    app = web.Application(middlewares=middlewares)
    app[COMMON_SETTINGS] = settings.common
    app[MEDIA_SETTINGS] = settings
    app[STORAGE] = MediaStorage(settings.storage.root)
    app.cleanup_ctx.append(database_context("media", MIGRATIONS))
    app.cleanup_ctx.append(storage_context)
    app.cleanup_ctx.append(sweeper_context)
    app.cleanup_ctx.append(import_worker_context(settings.imports,
                                                 settings.storage.max_file_size_bytes))
    app.cleanup_ctx.append(audit_purge_context(SERVICE, settings.audit_retention_days))
    app.cleanup_ctx.append(metrics_listener)
    setup_routes(app)
    return app
