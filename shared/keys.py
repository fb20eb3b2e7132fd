"""AppKeys that shared code reads from every service's application."""

from __future__ import annotations

from collections.abc import Callable

import asyncpg
from aiohttp import web

from shared.config import CommonSettings

COMMON_SETTINGS = web.AppKey("common_settings", CommonSettings)
DB_POOL = web.AppKey("db_pool", asyncpg.Pool)
# The request id of the request being served, set by the request-id middleware.
REQUEST_ID = web.RequestKey("request_id", str)
# Headers for answers to requests the HTTP parser refused, which no middleware or
# on_response_prepare signal sees (shared.runner).
PARSER_ERROR_HEADERS = web.AppKey(
    "parser_error_headers", Callable[[web.BaseRequest, web.StreamResponse], None])
