"""What the edge answers to requests it refuses, sent as raw bytes to Debian's nginx running
the shipped configuration in front of the stack: nginx's own errors and the gateway's
parser errors carry every security header, a generic problem document and no banner;
names other than the configured one get no answer at all."""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from deploy.nginx_local import LocalNginx, NginxProcess
from deploy.stack import free_port
from tests.e2e.support_edge import SECURITY_HEADERS, client_context
from tests.support.raw_http import (
    BAD_HEADER_LINES,
    BANNERS,
    SECRET_COOKIE,
    RawResponse,
    exchange,
    request,
    sent_lines,
)

pytestmark = pytest.mark.timeout(300)

HEADER_BUFFER = 8 * 1024  # large_client_header_buffers in deploy/nginx/nginx.conf


async def over_tls(edge_port: int, ca_file, data: bytes, *, sni: str = "localhost"
                   ) -> RawResponse:
    return await exchange(edge_port, data, ssl_context=client_context(ca_file),
                          server_hostname=sni)


def assert_refused_safely(response: RawResponse, status: int, sent: bytes) -> None:
    assert response.status == status, response.raw[:300]
    assert response.header("Content-Type").startswith("application/problem+json")
    for header in SECURITY_HEADERS:
        assert len(response.headers(header)) == 1, (header, response.head)
    assert response.header("Cache-Control") == "no-store"
    # server_tokens off: at most nginx's bare name, never a version or aiohttp's banner.
    assert response.headers("Server") in ([], ["nginx"])
    for banner in BANNERS:
        assert banner not in response.raw.lower(), banner
    assert b"nginx" not in response.body.lower()
    assert json.loads(response.body)["type"] == "about:blank"
    assert SECRET_COOKIE.encode() not in response.raw
    for line in sent_lines(sent):
        assert line not in response.raw


@pytest.mark.parametrize("case", sorted(BAD_HEADER_LINES))
async def test_parser_refused_request_through_nginx_is_a_generic_problem(edge, case):
    sent = request("/api/auth/me", host="localhost", lines=BAD_HEADER_LINES[case])
    assert_refused_safely(await over_tls(edge.https_port, edge.ca_file, sent), 400, sent)


OWN_ERRORS = {
    "duplicate_host_400": (400, request("/", host="localhost", lines=(b"Host: localhost",))),
    "trace_405": (405, request("/", host="localhost", method="TRACE")),
    "declared_body_over_the_limit_413": (413, request(
        "/api/auth/login", host="localhost", method="POST",
        lines=(b"Content-Length: 10000000", f"Cookie: {SECRET_COOKIE}".encode()))),
    "uri_over_8k_414": (414, request("/" + "u" * HEADER_BUFFER, host="localhost")),
    "header_line_over_8k_494": (400, request("/", host="localhost", lines=(
        f"Cookie: {SECRET_COOKIE}; pad={'p' * HEADER_BUFFER}".encode(),))),
    "unknown_transfer_coding_501": (501, request(
        "/api/auth/login", host="localhost", method="POST",
        lines=(b"Transfer-Encoding: gzip", f"Cookie: {SECRET_COOKIE}".encode()))),
}


@pytest.mark.parametrize("case", sorted(OWN_ERRORS))
async def test_nginx_own_error_pages_carry_security_headers_and_a_generic_body(edge, case):
    status, sent = OWN_ERRORS[case]
    assert_refused_safely(await over_tls(edge.https_port, edge.ca_file, sent), status, sent)


async def test_the_longest_lines_nginx_accepts_reach_the_gateway_and_are_served(edge):
    # A header line and a request line that fill nginx's buffer exactly: nginx lets them
    # through, and the gateway's parser must accept what nginx accepted.
    header = b"X-Pad: " + b"v" * (HEADER_BUFFER - len("X-Pad: \r\n"))
    target = "/health?" + "q" * (HEADER_BUFFER - len("GET /health? HTTP/1.1\r\n"))
    for sent in (request("/health", host="localhost", lines=(header,)),
                 request(target, host="localhost")):
        response = await over_tls(edge.https_port, edge.ca_file, sent)
        assert response.status == 200, response.raw[:300]
        assert json.loads(response.body) == {"status": "ok"}


@contextmanager
def own_nginx(edge, tmp_path, gateway: str) -> Iterator[int]:
    """An nginx of this test's own in front of ``gateway``; yields its HTTPS port."""
    https_port = free_port()
    nginx = NginxProcess(LocalNginx(tmp_path, gateway, edge.tls.cert_file, edge.tls.key_file,
                                    free_port(), https_port), nginx=edge.nginx.nginx)
    nginx.start()
    try:
        yield https_port
    finally:
        nginx.stop()


async def test_gateway_down_is_a_generic_502(edge, tmp_path):
    with own_nginx(edge, tmp_path, f"127.0.0.1:{free_port()}") as port:
        sent = request("/api/auth/me", host="localhost", lines=(
            f"Cookie: {SECRET_COOKIE}".encode(),))
        assert_refused_safely(await over_tls(port, edge.ca_file, sent), 502, sent)


async def test_gateway_not_answering_is_a_generic_504(edge, tmp_path):
    # A listener whose accept queue is full: the kernel drops nginx's connection attempt,
    # so nginx gives up after its proxy_connect_timeout.
    with socket.socket() as full:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        # With a backlog of 0 the queue holds one connection; this one fills it.
        with socket.create_connection(full.getsockname()), \
                own_nginx(edge, tmp_path, f"127.0.0.1:{full.getsockname()[1]}") as port:
            sent = request("/health", host="localhost")
            assert_refused_safely(await over_tls(port, edge.ca_file, sent), 504, sent)


async def test_unknown_host_over_https_is_closed_without_an_answer(edge):
    for host in ("evil.example", "127.0.0.1", f"evil.example:{edge.https_port}"):
        response = await over_tls(edge.https_port, edge.ca_file, request("/", host=host))
        assert response.raw == b"", host


async def test_unknown_tls_name_is_refused_in_the_handshake(edge):
    with pytest.raises(ssl.SSLError, match="UNRECOGNIZED_NAME"):
        await over_tls(edge.https_port, edge.ca_file, request("/", host="evil.example"),
                       sni="evil.example")


async def test_unknown_or_missing_host_over_http_is_closed_without_a_redirect(edge):
    for sent in (request("/api/media", host="evil.example"),
                 request("/api/media", host=f"evil.example:{edge.http_port}"),
                 b"GET /api/media HTTP/1.0\r\n\r\n"):
        response = await exchange(edge.http_port, sent)
        assert response.raw == b"", sent


async def test_http_redirect_names_the_configured_host(edge):
    response = await exchange(edge.http_port, request("/api/media?limit=5",
                                                      host="LocalHost."))
    assert response.status == 301
    assert response.header("Location") == f"https://localhost:{edge.https_port}/api/media?limit=5"


async def test_the_containers_health_probe_by_address_still_answers(edge):
    response = await exchange(edge.http_port, request("/nginx-health", host="127.0.0.1"))
    assert response.status == 200
    assert response.body == b"ok\n"


async def test_gateway_answers_through_nginx_name_no_version(edge):
    response = await over_tls(edge.https_port, edge.ca_file, request("/health",
                                                                     host="localhost"))
    assert response.status == 200
    assert response.headers("Server") == ["nginx"]
