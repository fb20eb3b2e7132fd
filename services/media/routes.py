"""The media service's routes."""

from __future__ import annotations

from aiohttp import web

from services.media import handlers
from services.media.imports.handlers import setup_import_routes
from shared.web import health, ready


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/health", health, allow_head=False)
    app.router.add_get("/ready", ready, allow_head=False)
    app.router.add_post("/media", handlers.create_media)
    app.router.add_get("/media", handlers.list_media, allow_head=False)
    app.router.add_get("/media/{id}", handlers.get_media, allow_head=False)
    app.router.add_get("/media/{id}/content", handlers.get_media_content)
    app.router.add_patch("/media/{id}", handlers.update_media)
    app.router.add_delete("/media/{id}", handlers.delete_media)
    # Not under /media: the gateway's /api/media/{id} would otherwise reach it as well.
    app.router.add_get("/audit", handlers.get_audit, allow_head=False)
    setup_import_routes(app)
