"""The gateway's AppKeys and RequestKeys, in one place."""

from __future__ import annotations

from aiohttp import web

from services.gateway.authentication import TokenVerifier
from services.gateway.clientip import ClientInfo, ClientResolver
from services.gateway.limiter import Limiter
from services.gateway.proxy import Upstream
from services.gateway.revocation import RevocationListener, RevokedSet
from services.gateway.routes import ApiRoute
from services.gateway.settings import GatewaySettings
from shared.tokens import Claims

SETTINGS = web.AppKey("gateway_settings", GatewaySettings)
UPSTREAMS = web.AppKey("upstreams", dict[str, Upstream])
VERIFIER = web.AppKey("verifier", TokenVerifier)
REVOKED = web.AppKey("revoked", RevokedSet)
LISTENER = web.AppKey("revocation_listener", RevocationListener)
LIMITER = web.AppKey("limiter", Limiter)
RESOLVER = web.AppKey("client_resolver", ClientResolver)
# The API row behind each registered aiohttp route, for the middlewares to read.
API_BY_ROUTE = web.AppKey("api_by_route", dict[web.AbstractRoute, ApiRoute])
OPENAPI_DOCUMENT = web.AppKey("openapi_document", bytes)

CLIENT = web.RequestKey("client", ClientInfo)
USER = web.RequestKey("user", Claims)
