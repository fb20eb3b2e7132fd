"""The OpenAPI document against the route table, and the metrics listener."""

from __future__ import annotations

import json
import socket
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp.test_utils import TestServer

from services.gateway.app import OPENAPI_FILE
from services.gateway.routes import API_ROUTES, OWN_PATHS
from tests.integration.gateway.gateway_helpers import Browser, server_url

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def documented() -> set[tuple[str, str]]:
    document = json.loads(OPENAPI_FILE.read_text())
    return {(method.upper(), path) for path, item in document["paths"].items()
            for method in item if method in HTTP_METHODS}


def routed(app) -> set[tuple[str, str]]:
    return {(route.method, route.resource.canonical) for route in app.router.routes()
            if route.resource is not None and route.method != "OPTIONS"
            and route.resource.canonical != "/{path}"}


async def test_every_public_route_is_documented_and_every_documented_path_is_routed(
        gateway: TestServer, http: aiohttp.ClientSession) -> None:
    app = gateway.app
    assert app is not None
    docs = documented()
    table = {(api.method, api.path) for api in API_ROUTES} | \
        {("HEAD", api.path) for api in API_ROUTES if api.head} | \
        {("GET", path) for path in OWN_PATHS}
    live = routed(app) - {(m, p) for m, p in routed(app) if m == "HEAD" and ("GET", p) in
                          {("GET", path) for path in OWN_PATHS}}
    assert table == live
    assert docs == table
    # Nothing is routed under /api that the document does not describe.
    assert {p for _m, p in live if p.startswith("/api/")} == \
        {p for _m, p in docs if p.startswith("/api/")}
    served = await http.get(f"{server_url(gateway)}/openapi.json")
    assert served.status == 200
    assert (await served.json()) == json.loads(OPENAPI_FILE.read_text())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_metrics_are_served_on_their_own_listener_only(
        make_gateway: Callable[..., Awaitable[TestServer]], browser: Browser) -> None:
    port = free_port()
    gateway = await make_gateway(**{"Metrics__Port": str(port)})
    client = Browser(browser.session, server_url(gateway))
    await client.request("GET", "/api/media")  # a 401
    public = await client.request("GET", "/metrics")
    assert public.status == 404
    async with browser.session.get(f"http://127.0.0.1:{port}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    for name in ("gateway_requests_total", "gateway_request_duration_seconds_bucket",
                 "gateway_unauthorized_total", "gateway_revoked_tokens",
                 "gateway_ratelimit_redis_fallback", "gateway_upstream_errors_total",
                 "gateway_rate_limited_total", "gateway_forbidden_total"):
        assert name in text, name
    assert 'route="/api/media",status="401"' in text
