"""AppKeys of the media service's application."""

from __future__ import annotations

from aiohttp import web

from services.media.ingest import MediaIngestor
from services.media.settings import MediaSettings
from services.media.storage import MediaStorage

MEDIA_SETTINGS = web.AppKey("media_settings", MediaSettings)
STORAGE = web.AppKey("media_storage", MediaStorage)
# Set once the database pool is open; the archive import stores media through it too.
INGESTOR = web.AppKey("media_ingestor", MediaIngestor)
