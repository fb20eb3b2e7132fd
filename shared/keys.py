"""AppKeys that shared code reads from every service's application."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from shared.config import CommonSettings

COMMON_SETTINGS = web.AppKey("common_settings", CommonSettings)
DB_POOL = web.AppKey("db_pool", asyncpg.Pool)
# The request id of the request being served, set by the request-id middleware.
REQUEST_ID = web.RequestKey("request_id", str)
