"""AppKeys of the auth service."""

from __future__ import annotations

from aiohttp import web

from services.auth.hashing import Hasher
from services.auth.settings import AuthSettings
from shared.tokens import TokenCodec

AUTH_SETTINGS = web.AppKey("auth_settings", AuthSettings)
HASHER = web.AppKey("hasher", Hasher)
USER_TOKENS = web.AppKey("user_tokens", TokenCodec)
