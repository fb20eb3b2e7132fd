"""The auth service's application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from services.auth import store
from services.auth.domain import dummy_cost
from services.auth.hashing import Hasher
from services.auth.keys import AUTH_SETTINGS, HASHER, USER_TOKENS
from services.auth.maintenance import purge_context
from services.auth.routes import setup_routes
from services.auth.settings import SERVICE, AuthSettings
from shared.audit import purge_context as audit_purge_context
from shared.db import database_context
from shared.identity import INTERNAL_TOKEN_HEADER, internal_codec, internal_identity_middleware
from shared.keys import COMMON_SETTINGS, DB_POOL
from shared.metrics import metrics_listener
from shared.tokens import TokenCodec, TokenError
from shared.web import error_middleware, request_id_middleware

MIGRATIONS = Path(__file__).parent / "migrations"


def _trust_gateway(settings: AuthSettings):
    """Keep the caller's request id only when the caller proved to be the gateway."""
    codec = internal_codec(settings.common.internal_keys, SERVICE)

    def trusted(request: web.Request) -> bool:
        token = request.headers.get(INTERNAL_TOKEN_HEADER)
        if not token:
            return False
        try:
            codec.verify(token)
        except TokenError:
            return False
        return True

    return trusted


async def hasher_context(app: web.Application) -> AsyncIterator[None]:
    settings = app[AUTH_SETTINGS]
    hasher = Hasher(settings.bcrypt_cost, workers=settings.hash_workers,
                    queue_size=settings.hash_queue_size)
    try:
        async with app[DB_POOL].acquire() as connection:
            stored = await store.select_password_hashes(connection)
        await hasher.start([dummy_cost(stored, settings.bcrypt_cost)])
        app[HASHER] = hasher
        yield
    finally:
        hasher.close()


def create_app(settings: AuthSettings) -> web.Application:
    jwt = settings.jwt
    app = web.Application(
        middlewares=[
            request_id_middleware(_trust_gateway(settings)),
            error_middleware,
            internal_identity_middleware(settings.common.internal_keys, SERVICE),
        ],
        # Nothing this service accepts comes near this; read_json enforces 64 KiB itself.
        client_max_size=256 * 1024,
    )
    app[COMMON_SETTINGS] = settings.common
    app[AUTH_SETTINGS] = settings
    app[USER_TOKENS] = TokenCodec(jwt.keys, issuer=jwt.issuer, audience=jwt.audience,
                                  lifetime_seconds=settings.token_lifetime_seconds)
    app.cleanup_ctx.extend([
        database_context(SERVICE, MIGRATIONS),
        hasher_context,
        purge_context,
        audit_purge_context(SERVICE, settings.audit_retention_days),
        metrics_listener,
    ])
    setup_routes(app)
    return app
