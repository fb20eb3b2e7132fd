"""Security headers on every kind of response, CORS for configured origins only, and the
Origin check on state-changing requests that carry the cookie."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from services.gateway.headers import CONTENT_SECURITY_POLICY
from tests.integration.gateway.gateway_helpers import Browser, EchoUpstream, server_url
from tests.support import AUTH_COOKIE, DEV_AUTH_COOKIE

ALLOWED = "https://app.example.org"
EVIL = "https://evil.example.net"


def assert_security_headers(response: aiohttp.ClientResponse, *, api: bool = True,
                            https: bool = False) -> None:
    headers = response.headers
    where = f"{response.method} {response.url.path} -> {response.status}"
    assert headers["X-Frame-Options"] in {"SAMEORIGIN", "DENY"}, where
    assert headers["X-Content-Type-Options"] == "nosniff", where
    assert headers["X-XSS-Protection"] == "1; mode=block", where
    assert headers["Referrer-Policy"] == "strict-origin-when-cross-origin", where
    csp = headers["Content-Security-Policy"]
    for directive in ("default-src 'self'", "frame-ancestors 'self'", "base-uri 'self'",
                      "form-action 'self'", "object-src 'none'"):
        assert directive in csp, (where, directive)
    assert "unsafe-inline" not in csp
    assert "unsafe-eval" not in csp
    assert headers["Cross-Origin-Opener-Policy"] == "same-origin", where
    assert headers["Cross-Origin-Resource-Policy"] == "same-origin", where
    assert "camera=()" in headers["Permissions-Policy"], where
    assert "geolocation=()" in headers["Permissions-Policy"], where
    assert "Server" not in headers, where
    assert "X-Request-ID" in headers, where
    if api:
        assert headers["Cache-Control"] == "no-store", where
    if https:
        max_age = int(headers["Strict-Transport-Security"].split("max-age=")[1].split(";")[0])
        assert max_age >= 31_536_000
    else:
        assert "Strict-Transport-Security" not in headers, where


async def test_every_header_on_success_error_and_static_responses(
        make_gateway: Callable[..., Awaitable[TestServer]], browser: Browser) -> None:
    gateway = await make_gateway(**{"RateLimit__AuthBurst": "3",
                                    "RateLimit__AuthPerMinute": "1",
                                    "MediaStorage__MaxFileSizeBytes": "1000",
                                    "Limits__MultipartOverheadBytes": "0"})
    client = Browser(browser.session, server_url(gateway))
    seen: list[int] = []

    async def check(method: str, path: str, *, api: bool = True, **kwargs) -> None:
        response = await client.request(method, path, **kwargs)
        seen.append(response.status)
        assert_security_headers(response, api=api)

    await check("GET", "/api/auth/registration-available")  # proxied 200
    await check("POST", "/api/auth/login", json={"username": "x", "password": "y" * 12})  # 401 up
    await check("GET", "/api/media")  # 401 at the gateway
    await check("GET", "/api/nothing-here")  # 404
    await check("GET", "/", api=False)  # static
    await check("GET", "/index.html", api=False)  # static
    await check("GET", "/missing.js", api=False)  # static 404
    await check("GET", "/health")
    await check("GET", "/openapi.json")
    await client.sign_up()
    await check("POST", "/api/media", data=os.urandom(2000))  # 413
    await check("POST", "/api/auth/login", json={"username": "x", "password": "y" * 12})  # 429
    assert {200, 401, 404, 413, 429} <= set(seen)


async def test_headers_on_upstream_failure(make_gateway: Callable[..., Awaitable[TestServer]],
                                           user: Browser) -> None:
    gateway = await make_gateway(**{"Upstreams__Media": "http://127.0.0.1:9"})
    client = Browser(user.session, server_url(gateway), token=user.token)
    response = await client.request("GET", "/api/media")
    assert response.status == 502
    assert_security_headers(response)


async def test_hsts_only_on_https_as_told_by_a_trusted_proxy(
        make_gateway: Callable[..., Awaitable[TestServer]], http: aiohttp.ClientSession) -> None:
    trusting = await make_gateway(**{"Proxy__TrustedNetworks": "127.0.0.1/32"})
    response = await http.get(f"{server_url(trusting)}/health",
                              headers={"X-Forwarded-Proto": "https"})
    assert_security_headers(response, https=True)
    untrusting = await make_gateway()
    response = await http.get(f"{server_url(untrusting)}/health",
                              headers={"X-Forwarded-Proto": "https"})
    assert_security_headers(response, https=False)


async def test_upstream_may_tighten_headers_but_not_loosen_them(
        user: Browser, echo: EchoUpstream) -> None:
    echo.extra_response_headers.update({
        "Content-Security-Policy": "sandbox; default-src 'none'",
        "X-Frame-Options": "DENY",
        "Cache-Control": "private, max-age=60",
    })
    tightened = await user.request("GET", "/api/media/abc/content")
    # One header field; its comma-separated policies are each enforced.
    (csp,) = tightened.headers.getall("Content-Security-Policy")
    policies = [policy.strip() for policy in csp.split(",")]
    assert policies == [CONTENT_SECURITY_POLICY, "sandbox; default-src 'none'"]
    assert tightened.headers["X-Frame-Options"] == "DENY"
    assert tightened.headers["Cache-Control"] == "private, max-age=60"

    echo.extra_response_headers.clear()
    echo.extra_response_headers.update({
        "X-Frame-Options": "ALLOWALL",
        "Referrer-Policy": "unsafe-url",
        "Cache-Control": "public, max-age=31536000",
        "Access-Control-Allow-Origin": "*",
        "Access-Control-Allow-Credentials": "true",
        "X-Content-Type-Options": "sniff",
        "Cross-Origin-Resource-Policy": "cross-origin",
    })
    loosened = await user.request("GET", "/api/media")
    assert_security_headers(loosened)
    assert "Access-Control-Allow-Origin" not in loosened.headers
    assert "Access-Control-Allow-Credentials" not in loosened.headers

    # A strict value first and a loose one after it: the browser might honour either, so
    # only one field of each leaves the gateway.
    echo.extra_response_headers.clear()
    echo.extra_response_headers.add("X-Frame-Options", "DENY")
    echo.extra_response_headers.add("X-Frame-Options", "ALLOWALL")
    echo.extra_response_headers.add("Referrer-Policy", "no-referrer")
    echo.extra_response_headers.add("Referrer-Policy", "unsafe-url")
    doubled = await user.request("GET", "/api/media")
    assert doubled.headers.getall("X-Frame-Options") == ["DENY"]
    assert doubled.headers.getall("Referrer-Policy") == ["no-referrer"]


@pytest.fixture
async def cors_gateway(make_gateway: Callable[..., Awaitable[TestServer]]) -> TestServer:
    return await make_gateway(**{"CORS__AllowedOrigins": f"{ALLOWED}, https://other.example"})


async def test_cors_allowed_origin_gets_credentials_and_exposed_headers(
        cors_gateway: TestServer, http: aiohttp.ClientSession) -> None:
    response = await http.get(f"{server_url(cors_gateway)}/api/auth/registration-available",
                              headers={"Origin": ALLOWED})
    assert response.status == 200
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
    assert "X-Request-ID" in response.headers["Access-Control-Expose-Headers"]
    assert_security_headers(response)


async def test_cors_refused_origin_gets_no_access_control_headers(
        cors_gateway: TestServer, http: aiohttp.ClientSession) -> None:
    response = await http.get(f"{server_url(cors_gateway)}/api/auth/registration-available",
                              headers={"Origin": EVIL})
    assert not [name for name in response.headers if name.lower().startswith("access-control-")]


async def test_cors_preflight_allowed_and_refused(cors_gateway: TestServer,
                                                  http: aiohttp.ClientSession) -> None:
    url = f"{server_url(cors_gateway)}/api/media/abc"
    allowed = await http.options(url, headers={
        "Origin": ALLOWED, "Access-Control-Request-Method": "PATCH",
        "Access-Control-Request-Headers": "content-type"})
    assert allowed.status == 200
    assert allowed.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert allowed.headers["Access-Control-Allow-Credentials"] == "true"
    assert "PATCH" in allowed.headers["Access-Control-Allow-Methods"]
    assert "CONTENT-TYPE" in allowed.headers["Access-Control-Allow-Headers"].upper()
    assert int(allowed.headers["Access-Control-Max-Age"]) > 0
    assert_security_headers(allowed)

    refused = await http.options(url, headers={
        "Origin": EVIL, "Access-Control-Request-Method": "PATCH"})
    assert refused.status == 403
    assert not [name for name in refused.headers if name.lower().startswith("access-control-")]
    odd_header = await http.options(url, headers={
        "Origin": ALLOWED, "Access-Control-Request-Method": "PATCH",
        "Access-Control-Request-Headers": "x-tempo-identity"})
    assert odd_header.status == 403


async def test_csrf_state_changing_request_with_cookie_needs_an_allowed_origin(
        cors_gateway: TestServer, user: Browser, echo: EchoUpstream) -> None:
    client = Browser(user.session, server_url(cors_gateway), token=user.token)
    cookie = {"Cookie": f"{AUTH_COOKIE}={user.token}"}
    url = f"{client.base}/api/media/abc"

    async def patch(**headers: str) -> int:
        response = await user.session.patch(url, json={"caption": "x"},
                                            headers={**cookie, **headers})
        await response.read()
        return response.status

    assert await patch(Origin=EVIL) == 403
    assert await patch() == 403  # neither Origin nor Referer
    assert await patch(Origin="null") == 403
    assert await patch(Referer=f"{EVIL}/page") == 403
    assert await patch(Origin=client.base) == 200  # the gateway's own origin
    assert await patch(Origin=ALLOWED) == 200  # a configured CORS origin
    assert await patch(Referer=f"{client.base}/gallery") == 200
    # Safe methods need no origin.
    response = await user.session.get(url, headers=cookie)
    assert response.status == 200
    refused = await user.session.delete(url, headers={**cookie, "Origin": EVIL})
    assert refused.status == 403
    assert (await refused.json())["code"] == "origin_not_allowed"


async def test_csrf_check_does_not_apply_without_the_cookie(browser: Browser) -> None:
    response = await browser.session.post(f"{browser.base}/api/auth/register",
                                          json={"username": "Runner",
                                                "password": "violet-harbor-tangent-42"},
                                          headers={"Origin": EVIL})
    assert response.status == 201


async def test_csrf_check_looks_for_the_cookie_by_its_configured_name(
        browser: Browser) -> None:
    async def register(cookie_name: str) -> int:
        response = await browser.session.post(
            f"{browser.base}/api/auth/register",
            json={"username": "Runner", "password": "violet-harbor-tangent-42"},
            headers={"Origin": EVIL, "Cookie": f"{cookie_name}=anything"})
        await response.read()
        return response.status

    assert await register(AUTH_COOKIE) == 403
    # The bare name is no sign-in cookie in production: nothing to ride on.
    assert await register(DEV_AUTH_COOKIE) == 201
