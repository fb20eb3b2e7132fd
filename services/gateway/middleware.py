"""The gateway's middlewares, each one concern, each doing only per-request work.

Their order is given once, in ``middlewares()``: outermost first.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import structlog
from aiohttp import hdrs, web

from services.gateway import metrics
from services.gateway.authentication import TokenVerifier, cookie_tokens
from services.gateway.clientip import ClientResolver
from services.gateway.csrf import STATE_CHANGING, OriginPolicy
from services.gateway.headers import SCHEME
from services.gateway.keys import CLIENT, USER
from services.gateway.limiter import Limiter
from services.gateway.ratelimit import Policy
from services.gateway.revocation import RevokedSet
from services.gateway.routes import HEALTH_PATH, ApiRoute
from shared.errors import (
    ForbiddenError,
    RateLimitedError,
    ServiceUnavailableError,
    UnauthorizedError,
)
from shared.tokens import TokenError
from shared.web import Handler, error_middleware, request_id_middleware

log = structlog.get_logger("gateway")

# How long a client is told to wait while revocations cannot be checked.
REVOCATION_RETRY_AFTER = 5


def client_middleware(resolver: ClientResolver):
    """Who is calling, and over which scheme, before anything else is decided."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        headers = request.headers
        info = resolver.resolve(request.remote, headers.get("X-Forwarded-For"),
                                headers.get("X-Forwarded-Proto"), request.secure)
        request[CLIENT] = info
        request[SCHEME] = info.scheme
        return await handler(request)

    return middleware


def _route_label(request: web.Request) -> str:
    resource = request.match_info.route.resource
    if resource is None:
        return "unmatched"
    return resource.canonical


# Methods are client-chosen tokens; anything else is counted under one label so that a
# client cannot grow the metrics without bound.
_METHOD_LABELS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = "error"
    try:
        response = await handler(request)
        status = str(response.status)
        return response
    except web.HTTPException as exc:
        status = str(exc.status)
        raise
    finally:
        route = _route_label(request)
        method = request.method if request.method in _METHOD_LABELS else "OTHER"
        metrics.observe_request(route, method, status, time.perf_counter() - started)


def rate_limit_middleware(limiter: Limiter, api_by_route: dict[web.AbstractRoute, ApiRoute],
                          normal: Sequence[Policy], strict: Sequence[Policy]):
    """Every request but the liveness probe spends from its client's buckets."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == HEALTH_PATH:
            return await handler(request)
        api = api_by_route.get(request.match_info.route)
        policies = strict if api is not None and api.strict_rate_limit else normal
        decision = await limiter.check(request[CLIENT].limit_key, policies)
        if not decision.allowed:
            policy = decision.policy
            metrics.RATE_LIMITED.labels(policy.name).inc()
            retry = decision.retry_after_seconds
            log.info("rate_limited", policy=policy.name, client_ip=request[CLIENT].ip)
            raise RateLimitedError(retry, headers={
                "RateLimit-Limit": str(policy.burst),
                "RateLimit-Remaining": str(decision.remaining),
                "RateLimit-Reset": str(retry),
                "RateLimit-Policy": f"{policy.burst};w={policy.window_seconds}",
            })
        return await handler(request)

    return middleware


def csrf_middleware(policy: OriginPolicy, cookie_name: str):
    """A state-changing request with the cookie must come from an allowed origin."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method in STATE_CHANGING:
            headers = request.headers
            if cookie_tokens(headers.get(hdrs.COOKIE), cookie_name, limit=1):
                own = OriginPolicy.own_origin(request[SCHEME], headers.get(hdrs.HOST))
                if not policy.allows(origin=headers.get(hdrs.ORIGIN),
                                     referer=headers.get(hdrs.REFERER), own_origin=own):
                    metrics.FORBIDDEN.labels("origin").inc()
                    log.warning("csrf_origin_refused", origin=headers.get(hdrs.ORIGIN),
                                path=request.path)
                    raise ForbiddenError("The request's origin is not allowed.",
                                         code="origin_not_allowed")
        return await handler(request)

    return middleware


def authentication_middleware(verifier: TokenVerifier, revoked: RevokedSet,
                              api_by_route: dict[web.AbstractRoute, ApiRoute],
                              cookie_name: str):
    """Routes that are not public need a valid, unrevoked sign-in cookie.

    Of several cookies by that name, the first good one counts: an empty, forged, expired
    or revoked one next to it (planted, or left from an earlier sign-in) signs nobody out.
    """

    def refuse(reason: str) -> UnauthorizedError:
        metrics.UNAUTHORIZED.labels(reason).inc()
        return UnauthorizedError()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        api = api_by_route.get(request.match_info.route)
        if api is None or api.public:
            return await handler(request)
        tokens = cookie_tokens(request.headers.get(hdrs.COOKIE), cookie_name)
        if not tokens:
            raise refuse("missing")
        reason = "invalid"
        for token in tokens:
            try:
                claims = verifier.verify(token)
            except TokenError as exc:
                log.info("token_refused", reason=str(exc), path=request.path)
                continue
            if not revoked.usable():
                metrics.UPSTREAM_ERRORS.labels("revocations", "unavailable").inc()
                raise ServiceUnavailableError(
                    "Sign-in cannot be checked right now. Try again shortly.",
                    retry_after=REVOCATION_RETRY_AFTER, code="revocation_unavailable")
            if claims.token_id in revoked:
                reason = "revoked"
                continue
            request[USER] = claims
            return await handler(request)
        raise refuse(reason)

    return middleware


def middlewares(*, resolver: ClientResolver, limiter: Limiter, origin_policy: OriginPolicy,
                verifier: TokenVerifier, revoked: RevokedSet,
                api_by_route: dict[web.AbstractRoute, ApiRoute], normal: Sequence[Policy],
                strict: Sequence[Policy], cookie_name: str) -> list:
    return [
        request_id_middleware(lambda request: resolver.trusted(request.remote)),
        client_middleware(resolver),
        metrics_middleware,
        error_middleware,
        rate_limit_middleware(limiter, api_by_route, normal, strict),
        csrf_middleware(origin_policy, cookie_name),
        authentication_middleware(verifier, revoked, api_by_route, cookie_name),
    ]
