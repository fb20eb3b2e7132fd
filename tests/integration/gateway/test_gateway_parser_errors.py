"""Requests aiohttp's HTTP parser refuses, sent as raw bytes to the gateway as
``python -m services.gateway`` serves it: answered like any other gateway error."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from gateway_helpers import ProductionServer

from services.gateway import headers
from services.gateway.app import create_app
from services.gateway.settings import load_settings
from tests.raw_http import BAD_HEADER_LINES, BANNERS, SECRET_COOKIE, RawResponse, exchange, request

EXPECTED_HEADERS = {
    "Content-Security-Policy": headers.CONTENT_SECURITY_POLICY,
    "Permissions-Policy": headers.PERMISSIONS_POLICY,
    "X-Frame-Options": "SAMEORIGIN",
    "X-Content-Type-Options": "nosniff",
    "X-XSS-Protection": "1; mode=block",
    "Referrer-Policy": "strict-origin-when-cross-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-store",
    "Server": headers.SERVER,
}


@pytest.fixture
async def gateway_port(env_for: Callable[..., dict[str, str]]):
    async with ProductionServer(create_app(load_settings(env_for()))) as server:
        yield server.port


def assert_generic_problem(response: RawResponse, sent: bytes) -> None:
    assert response.status == 400, response.raw[:300]
    assert response.header("Content-Type") == "application/problem+json; charset=utf-8"
    for name, value in EXPECTED_HEADERS.items():
        assert response.headers(name) == [value], name
    body = json.loads(response.body)
    assert body["code"] == "bad_request"
    assert body["requestId"] == response.header("X-Request-ID")
    # Nothing the client sent comes back: not the cookie, not any line of the request.
    assert SECRET_COOKIE.encode() not in response.raw
    assert b"authToken" not in response.raw
    for line in sent.split(b"\r\n")[1:]:
        if len(line) > 8:
            assert line not in response.raw
    for banner in BANNERS:
        assert banner not in response.raw.lower(), banner


@pytest.mark.parametrize("case", sorted(BAD_HEADER_LINES))
async def test_parser_refused_request_is_generic_problem_json_with_security_headers(
        gateway_port: int, case: str) -> None:
    sent = request("/api/auth/me", host="localhost", lines=BAD_HEADER_LINES[case])
    assert_generic_problem(await exchange(gateway_port, sent), sent)


async def test_parser_refused_request_line_echoes_nothing(gateway_port: int) -> None:
    sent = f"GET /{SECRET_COOKIE} HTTP/1.1 extra\r\nHost: localhost\r\n\r\n".encode()
    assert_generic_problem(await exchange(gateway_port, sent), sent)


async def test_gateway_answers_name_no_server_version(gateway_port: int) -> None:
    for target in ("/health", "/api/nothing-here", "/"):
        response = await exchange(gateway_port, request(target, host="localhost"))
        assert response.headers("Server") == [headers.SERVER], target
        for banner in BANNERS:
            assert banner not in response.head.lower(), (target, banner)
