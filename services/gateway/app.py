"""The gateway application: state, middlewares, routes, CORS and background listeners."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp_cors
import structlog
from aiohttp import web

from services.gateway import audit, handlers
from services.gateway.authentication import TokenVerifier
from services.gateway.bodies import BodyPolicy, StreamRules, expect_handler
from services.gateway.bodyrate import MinRate
from services.gateway.clientip import ClientResolver
from services.gateway.csrf import OriginPolicy
from services.gateway.headers import add_security_headers, parser_error_headers
from services.gateway.keys import (
    API_BY_ROUTE,
    LIMITER,
    LISTENER,
    OPENAPI_DOCUMENT,
    RESOLVER,
    REVOKED,
    SETTINGS,
    UPSTREAMS,
    VERIFIER,
)
from services.gateway.limiter import FallbackLimiter, MemoryLimiter, RedisLimiter, redis_client
from services.gateway.middleware import middlewares
from services.gateway.proxy import Upstream
from services.gateway.ratelimit import Policy
from services.gateway.revocation import RevocationListener, RevokedSet
from services.gateway.routes import (
    API_ROUTES,
    AUDIT_PATH,
    HEALTH_PATH,
    OPENAPI_PATH,
    READY_PATH,
    BodyLimit,
)
from services.gateway.settings import BodyLimits, GatewaySettings
from services.gateway.slots import ClientSlots
from services.gateway.tls import redirect_listener
from shared.keys import COMMON_SETTINGS, PARSER_ERROR_HEADERS
from shared.metrics import metrics_listener
from shared.tokens import TokenCodec
from shared.web import health

log = structlog.get_logger("gateway")

OPENAPI_FILE = Path(__file__).resolve().parent / "openapi.json"
CORS_ALLOWED_HEADERS = ("Content-Type", "X-Request-ID", "Range", "If-None-Match",
                        "If-Modified-Since", "If-Range")
CORS_EXPOSED_HEADERS = ("X-Request-ID", "Retry-After", "RateLimit-Limit", "RateLimit-Remaining",
                        "RateLimit-Reset", "RateLimit-Policy", "Content-Disposition",
                        "Content-Range", "Accept-Ranges", "ETag", "Location")
CORS_MAX_AGE_SECONDS = 600


def load_openapi() -> bytes:
    # Parsed and re-serialised once: a broken file stops the start, not a request.
    return json.dumps(json.loads(OPENAPI_FILE.read_text(encoding="utf-8")),
                      separators=(",", ":")).encode()


def _limiter(settings: GatewaySettings):
    rate = settings.rate_limit
    memory = MemoryLimiter(rate.memory_max_clients)
    if rate.backend != "redis":
        return memory
    client = redis_client(rate.redis_url, rate.redis_timeout_seconds)
    return FallbackLimiter(RedisLimiter(client, rate.redis_key_prefix), memory,
                           rate.redis_retry_seconds)


async def _upstreams_context(app: web.Application) -> AsyncIterator[None]:
    upstreams = app[UPSTREAMS]
    for upstream in upstreams.values():
        await upstream.start()
    try:
        yield
    finally:
        for upstream in upstreams.values():
            await upstream.close()


async def _revocation_context(app: web.Application) -> AsyncIterator[None]:
    listener = app[LISTENER]
    await listener.start()
    try:
        yield
    finally:
        await listener.stop()


async def _limiter_context(app: web.Application) -> AsyncIterator[None]:
    try:
        yield
    finally:
        await app[LIMITER].close()


def _cors(app: web.Application, settings: GatewaySettings) -> aiohttp_cors.CorsConfig:
    options = aiohttp_cors.ResourceOptions(
        allow_credentials=True,
        expose_headers=CORS_EXPOSED_HEADERS,
        allow_headers=CORS_ALLOWED_HEADERS,
        allow_methods=("GET", "HEAD", "POST", "PATCH", "DELETE"),
        max_age=CORS_MAX_AGE_SECONDS,
    )
    if settings.cors_origins and not settings.common.development \
            and "*" in settings.cors_origins:
        raise ValueError("a wildcard CORS origin is refused in production")
    return aiohttp_cors.setup(app, defaults={origin: options
                                             for origin in settings.cors_origins})


def _body_policies(limits: BodyLimits) -> dict[BodyLimit, BodyPolicy]:
    rate = None
    if limits.stream_min_bytes_per_second > 0:
        rate = MinRate(limits.stream_min_bytes_per_second, limits.stream_rate_window_seconds)
    # One count of open uploads per client, whichever route they stream to.
    stream = StreamRules(limits.body_idle_timeout_seconds, rate,
                         ClientSlots(limits.streams_per_client))
    deadline = limits.json_deadline_seconds
    return {BodyLimit.JSON: BodyPolicy(limits.json_bytes, deadline),
            BodyLimit.MEDIA: BodyPolicy(limits.media_bytes, deadline, stream),
            BodyLimit.IMPORT: BodyPolicy(limits.import_bytes, deadline, stream)}


def create_app(settings: GatewaySettings) -> web.Application:
    common = settings.common
    jwt = settings.jwt
    codec = TokenCodec(jwt.keys, issuer=jwt.issuer, audience=jwt.audience,
                       lifetime_seconds=jwt.expiration_days * 86_400)
    verifier = TokenVerifier(codec, settings.token_cache_size)
    revoked = RevokedSet(settings.revocation.grace_seconds)
    revoked.on_revoke(verifier.evict_jti)
    resolver = ClientResolver(settings.trusted_networks)
    limiter = _limiter(settings)
    api_by_route: dict[web.AbstractRoute, object] = {}
    rate = settings.rate_limit
    normal = (Policy.per_minute("global", rate.global_per_minute, rate.global_burst),)
    strict = (*normal, Policy.per_minute("auth", rate.auth_per_minute, rate.auth_burst))

    app = web.Application(middlewares=middlewares(
        resolver=resolver, limiter=limiter,
        origin_policy=OriginPolicy(settings.cors_origins), verifier=verifier, revoked=revoked,
        api_by_route=api_by_route, normal=normal, strict=strict,
        cookie_name=settings.cookie_name,
    ))
    app[COMMON_SETTINGS] = common
    app[SETTINGS] = settings
    app[VERIFIER] = verifier
    app[REVOKED] = revoked
    app[RESOLVER] = resolver
    app[LIMITER] = limiter
    app[API_BY_ROUTE] = api_by_route
    app[OPENAPI_DOCUMENT] = load_openapi()
    app[UPSTREAMS] = {
        "auth": Upstream("auth", settings.upstreams.auth, settings.upstreams,
                         common.internal_keys),
        "media": Upstream("media", settings.upstreams.media, settings.upstreams,
                          common.internal_keys),
    }
    app[LISTENER] = RevocationListener(
        common.database_url.reveal(), revoked,
        check_interval=settings.revocation.check_interval_seconds,
        reconnect_delay=settings.revocation.reconnect_delay_seconds,
    )

    app.cleanup_ctx.extend([
        metrics_listener,
        _upstreams_context,
        _revocation_context,
        _limiter_context,
        redirect_listener(settings.tls, common.host),
    ])

    router = app.router
    router.add_get(HEALTH_PATH, health)
    router.add_get(READY_PATH, handlers.ready)
    router.add_get(OPENAPI_PATH, handlers.openapi_document)
    policies = _body_policies(settings.limits)
    cors = _cors(app, settings)
    for api in API_ROUTES:
        policy = policies[api.body]
        handler = audit.get_audit if api.path == AUDIT_PATH else \
            handlers.proxy_handler(api, policy)
        route = router.add_route(api.method, api.path, handler, expect_handler=expect_handler)
        api_by_route[route] = api
        if api.head:
            head = router.add_route("HEAD", api.path, handlers.proxy_handler(api, policy),
                                    expect_handler=expect_handler)
            api_by_route[head] = api
    for resource in router.resources():
        if resource.canonical.startswith("/api/"):
            cors.add(resource)
    router.add_get("/{path:.*}", handlers.static_file)
    app.on_response_prepare.append(add_security_headers)
    app[PARSER_ERROR_HEADERS] = parser_error_headers
    return app
