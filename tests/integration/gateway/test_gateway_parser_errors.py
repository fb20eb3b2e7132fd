"""Requests aiohttp's HTTP parser refuses, sent as raw bytes to the gateway as
``python -m services.gateway`` serves it: answered like any other gateway error."""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable

import pytest
import structlog
import structlog.testing
import trustme

from deploy.stack import free_port
from services.gateway import headers
from services.gateway.app import create_app
from services.gateway.settings import load_settings
from services.gateway.tls import server_ssl_context
from tests.integration.gateway.gateway_helpers import ProductionServer
from tests.support.raw_http import (
    BAD_HEADER_LINES,
    BANNERS,
    SECRET_COOKIE,
    RawResponse,
    exchange,
    request,
    sent_lines,
)

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
    # Like every other gateway answer: no Server header, so no banner at all.
    assert response.headers("Server") == []
    body = json.loads(response.body)
    assert body["code"] == "bad_request"
    assert body["requestId"] == response.header("X-Request-ID")
    # Nothing the client sent comes back: not the cookie, not any line of the request.
    assert SECRET_COOKIE.encode() not in response.raw
    assert b"authToken" not in response.raw
    for line in sent_lines(sent):
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


async def test_gateway_answers_carry_no_server_banner(gateway_port: int) -> None:
    for target in ("/health", "/api/nothing-here", "/"):
        response = await exchange(gateway_port, request(target, host="localhost"))
        assert response.status in (200, 404), target
        assert response.headers("Server") == [], target
        for banner in BANNERS:
            assert banner not in response.head.lower(), (target, banner)


@pytest.fixture
def tls_env(tmp_path) -> tuple[trustme.CA, dict[str, str]]:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(cert_file)
    cert.private_key_pem.write_to_path(key_file)
    return ca, {"Server__TlsCertFile": str(cert_file), "Server__TlsKeyFile": str(key_file)}


async def test_parser_refused_request_over_the_gateways_own_tls_gets_hsts(
        env_for: Callable[..., dict[str, str]], tls_env) -> None:
    ca, env = tls_env
    settings = load_settings(env_for(**env))
    client = ssl.create_default_context()
    ca.configure_trust(client)
    sent = request("/", host="localhost", lines=BAD_HEADER_LINES["space_before_colon"])
    async with ProductionServer(create_app(settings),
                                ssl_context=server_ssl_context(settings.tls)) as server:
        response = await exchange(server.port, sent, ssl_context=client,
                                  server_hostname="localhost")
    assert_generic_problem(response, sent)
    assert response.headers("Strict-Transport-Security") == [headers.HSTS]


async def test_parser_refused_request_on_the_redirect_listener_is_a_generic_problem(
        env_for: Callable[..., dict[str, str]], tls_env) -> None:
    _ca, env = tls_env
    redirect_port = free_port()
    settings = load_settings(env_for(**env, Server__RedirectPort=str(redirect_port)))
    sent = request("/", host="localhost", lines=BAD_HEADER_LINES["header_line_over_8_kb"])
    async with ProductionServer(create_app(settings)):
        response = await exchange(redirect_port, sent)
    assert_generic_problem(response, sent)


async def test_parser_refused_request_is_logged_without_its_bytes(
        gateway_port: int, caplog: pytest.LogCaptureFixture) -> None:
    sent = request("/", host="localhost", lines=BAD_HEADER_LINES["control_character_in_value"])
    with structlog.testing.capture_logs() as logs:
        response = await exchange(gateway_port, sent)
    assert response.status == 400
    refused = [entry for entry in logs if entry["event"] == "request_refused"]
    assert refused == [{"event": "request_refused", "log_level": "info", "status": 400,
                        "request_id": response.header("X-Request-ID"),
                        "reason": "BadHttpMessage"}]
    assert "authToken" not in repr(logs)
    assert "authToken" not in caplog.text
