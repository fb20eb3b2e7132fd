"""The streaming proxy: what crosses it, size limits in both forms, disconnects, failures."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
from aiohttp.test_utils import TestServer

from services.gateway.app import create_app
from services.gateway.settings import load_settings
from tests.integration.gateway.gateway_helpers import (
    Browser,
    EchoUpstream,
    ProductionServer,
    identity_claims,
    server_url,
    wait_until,
)
from tests.support import AUTH_COOKIE, internal_headers

MEDIA_LIMIT = 1_000_000
OVERHEAD = 10_000
LIMIT = MEDIA_LIMIT + OVERHEAD
SMALL_LIMITS = {"MediaStorage__MaxFileSizeBytes": str(MEDIA_LIMIT),
                "Limits__MultipartOverheadBytes": str(OVERHEAD)}


async def raw_exchange(server: TestServer, head: str, body_parts: list[bytes] | None = None,
                       *, close_after_body: bool = False, read_timeout: float = 5.0) -> bytes:
    """Speak HTTP/1.1 on a socket: send ``head`` (and body parts), return what comes back."""
    host, port = "127.0.0.1", server.port
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(head.encode())
        await writer.drain()
        for part in body_parts or []:
            writer.write(part)
            try:
                await writer.drain()
            except ConnectionError:
                break
        if close_after_body:
            # A FIN, not a reset: a reset would discard what was sent before it.
            writer.close()
            return b""
        return await asyncio.wait_for(reader.read(65536), read_timeout)
    finally:
        writer.close()


def head_for(server: TestServer, method: str, path: str, token: str, extra: str = "") -> str:
    return (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            f"Cookie: {AUTH_COOKIE}={token}\r\nOrigin: http://127.0.0.1:{server.port}\r\n"
            f"Content-Type: application/octet-stream\r\n{extra}\r\n")


async def test_spoofed_internal_and_proxy_headers_are_stripped_and_identity_minted(
        user: Browser, echo: EchoUpstream, internal_key: str) -> None:
    forged = internal_headers(internal_key, "media", user_id="someone-else")
    response = await user.request("GET", "/api/media?limit=5&cursor=a%2Fb", headers={
        **forged,
        "X-Tempo-Admin": "1",
        "x-tempo-identity-extra": "1",
        "X-Forwarded-For": "10.9.8.7",
        "X-Real-IP": "10.9.8.7",
        "Forwarded": "for=10.9.8.7",
        "Authorization": "Bearer stolen",
        "X-Custom": "kept",
    })
    assert response.status == 200
    received = echo.received[-1]
    names = {name.lower() for name in received.header_names}
    spoofed = {name for name in names if name.startswith("x-tempo-")} - {"x-tempo-identity"}
    assert not spoofed
    stripped = {"cookie", "authorization", "x-forwarded-for", "x-real-ip", "forwarded"}
    assert stripped.isdisjoint(names)
    assert received.headers["X-Custom"] == "kept"
    assert received.query == "limit=5&cursor=a%2Fb"
    identity = identity_claims(internal_key, "media", received.headers["X-Tempo-Identity"])
    assert identity.subject != "someone-else"
    assert identity.extra["ip"] == "127.0.0.1"


async def test_auth_cookie_is_never_forwarded_upstream(user: Browser, echo: EchoUpstream
                                                       ) -> None:
    response = await user.request("GET", "/api/media",
                                  headers={"Cookie": f"{AUTH_COOKIE}={user.token}; theme=dark"})
    assert response.status == 200
    assert "cookie" not in {name.lower() for name in echo.received[-1].header_names}


async def test_hop_by_hop_headers_are_not_forwarded_either_way(
        user: Browser, echo: EchoUpstream) -> None:
    echo.extra_response_headers.update({"X-Tempo-Internal": "secret", "Server": "upstream/1.0",
                                        "X-Powered-By": "python"})
    response = await user.request("GET", "/api/media", headers={
        "Connection": "keep-alive, X-Drop-Me", "X-Drop-Me": "1", "TE": "trailers",
        "Keep-Alive": "timeout=5", "Proxy-Authorization": "Basic eA==", "Upgrade": "h2c"})
    assert response.status == 200
    names = {name.lower() for name in echo.received[-1].header_names}
    assert {"x-drop-me", "te", "keep-alive", "proxy-authorization", "upgrade"}.isdisjoint(names)
    assert "X-Tempo-Internal" not in response.headers
    assert "Server" not in response.headers
    assert "X-Powered-By" not in response.headers


async def test_gateway_adds_no_content_negotiation_headers_upstream(
        make_gateway: Callable[..., Awaitable[TestServer]], browser: Browser,
        echo: EchoUpstream) -> None:
    # An Accept-Encoding the client never sent would have the upstream compress an answer
    # that the gateway passes through as it is.
    gateway = await make_gateway()
    token = await Browser(browser.session, server_url(gateway)).sign_up()
    added = {"accept", "accept-encoding", "user-agent", "content-type"}
    head = (f"GET /api/media HTTP/1.1\r\nHost: 127.0.0.1:{gateway.port}\r\n"
            f"Cookie: {AUTH_COOKIE}={token}\r\n\r\n")
    assert (await raw_exchange(gateway, head)).startswith(b"HTTP/1.1 200 ")
    assert added.isdisjoint(name.lower() for name in echo.received[-1].header_names)
    head = (f"POST /api/media HTTP/1.1\r\nHost: 127.0.0.1:{gateway.port}\r\n"
            f"Cookie: {AUTH_COOKIE}={token}\r\nOrigin: http://127.0.0.1:{gateway.port}\r\n"
            "Content-Length: 5\r\n\r\n")
    assert (await raw_exchange(gateway, head, [b"hello"])).startswith(b"HTTP/1.1 200 ")
    received = echo.received[-1]
    assert received.size == 5
    assert added.isdisjoint(name.lower() for name in received.header_names)
    # What the client did send goes through unchanged.
    response = await browser.session.get(
        f"{server_url(gateway)}/api/media",
        headers={"Cookie": f"{AUTH_COOKIE}={token}", "Accept": "application/json",
                 "Accept-Encoding": "br", "User-Agent": "tempo-test/1"})
    assert response.status == 200
    sent = echo.received[-1].headers
    assert (sent["Accept"], sent["Accept-Encoding"], sent["User-Agent"]) == (
        "application/json", "br", "tempo-test/1")


async def test_request_id_is_made_sent_upstream_and_returned(user: Browser, echo: EchoUpstream
                                                             ) -> None:
    response = await user.request("GET", "/api/media",
                                  headers={"X-Request-ID": "client-chosen-id-123"})
    request_id = response.headers["X-Request-ID"]
    # From an untrusted peer the caller's id is replaced.
    assert request_id != "client-chosen-id-123"
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    assert echo.received[-1].headers["X-Request-ID"] == request_id


async def test_request_id_from_a_trusted_proxy_is_kept_when_well_formed(
        make_gateway: Callable[..., Awaitable[TestServer]], http: aiohttp.ClientSession,
        echo: EchoUpstream) -> None:
    gateway = await make_gateway(**{"Proxy__TrustedNetworks": "127.0.0.0/8"})
    base = server_url(gateway)
    kept = await http.get(f"{base}/health", headers={"X-Request-ID": "nginx-abcdef012345"})
    assert kept.headers["X-Request-ID"] == "nginx-abcdef012345"
    bad = await http.get(f"{base}/health", headers={"X-Request-ID": "bad id\twith spaces"})
    assert bad.headers["X-Request-ID"] != "bad id\twith spaces"


async def test_path_parameters_are_re_encoded_and_stay_inside_their_segment(
        user: Browser, echo: EchoUpstream) -> None:
    response = await user.request("GET", "/api/media/..%2F..%2Fauth%2Fme/content")
    assert response.status == 200
    assert echo.received[-1].path == "/media/..%2F..%2Fauth%2Fme/content"


async def test_unknown_api_path_is_404_at_the_gateway(user: Browser, echo: EchoUpstream
                                                      ) -> None:
    for path in ("/api/admin", "/api/media/x/y/z", "/api/auth/internal", "/api/"):
        response = await user.request("GET", path)
        assert response.status == 404, path
        assert response.content_type == "application/problem+json"
    assert echo.received == []


async def test_large_upload_streams_through_intact_with_and_without_length(
        make_gateway: Callable[..., Awaitable[TestServer]], browser: Browser,
        echo: EchoUpstream) -> None:
    gateway = await make_gateway(**SMALL_LIMITS)
    client = Browser(browser.session, server_url(gateway))
    await client.sign_up()
    payload = os.urandom(MEDIA_LIMIT)
    response = await client.request("POST", "/api/media", data=payload)
    assert response.status == 200
    body = await response.json()
    assert body["size"] == len(payload)
    assert body["sha256"] == hashlib.sha256(payload).hexdigest()
    assert echo.received[-1].headers["Content-Length"] == str(len(payload))

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(payload), 65536):
            yield payload[start:start + 65536]

    response = await client.request("POST", "/api/media", data=chunks())
    assert response.status == 200
    assert (await response.json())["sha256"] == hashlib.sha256(payload).hexdigest()


async def test_large_download_streams_back(user: Browser, echo: EchoUpstream) -> None:
    size = 20 * 1024 * 1024
    async with user.session.get(f"{user.base}/api/media/abc/content?stream={size}",
                                headers=user.headers("GET")) as response:
        assert response.status == 200
        received = 0
        async for chunk in response.content.iter_any():
            received += len(chunk)
    assert received == size


async def test_oversize_content_length_is_413_before_any_body_byte(
        make_gateway: Callable[..., Awaitable[TestServer]], browser: Browser,
        echo: EchoUpstream) -> None:
    gateway = await make_gateway(**SMALL_LIMITS)
    client = Browser(browser.session, server_url(gateway))
    token = await client.sign_up()
    # Headers only: the answer must come without a single byte of body being sent.
    head = head_for(gateway, "POST", "/api/media", token, f"Content-Length: {LIMIT + 1}\r\n")
    answer = await raw_exchange(gateway, head)
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"application/problem+json" in answer
    assert b"Connection: close" in answer or b"connection: close" in answer.lower()
    assert echo.received == []
    # Same for an import over its own (larger) limit.
    import_limit = 500_000_000 + OVERHEAD
    head = head_for(gateway, "POST", "/api/imports", token,
                    f"Content-Length: {import_limit + 1}\r\n")
    assert (await raw_exchange(gateway, head)).startswith(b"HTTP/1.1 413 ")
    # And a JSON route's 64 KiB.
    head = head_for(gateway, "POST", "/api/auth/password", token, "Content-Length: 65537\r\n")
    assert (await raw_exchange(gateway, head)).startswith(b"HTTP/1.1 413 ")


async def test_expect_100_continue_is_not_sent_before_the_checks(
        make_gateway: Callable[..., Awaitable[TestServer]], browser: Browser,
        echo: EchoUpstream) -> None:
    gateway = await make_gateway(**SMALL_LIMITS)
    head = (f"POST /api/media HTTP/1.1\r\nHost: 127.0.0.1:{gateway.port}\r\n"
            "Content-Length: 1000\r\nExpect: 100-continue\r\n\r\n")
    answer = await raw_exchange(gateway, head)
    # No cookie: refused outright, and the client was never invited to send its body.
    assert answer.startswith(b"HTTP/1.1 401 ")
    assert b"100 Continue" not in answer


async def test_chunked_upload_over_limit_is_cut_with_413_and_upstream_aborted(
        make_gateway: Callable[..., Awaitable[TestServer]], browser: Browser,
        echo: EchoUpstream) -> None:
    gateway = await make_gateway(**SMALL_LIMITS)
    client = Browser(browser.session, server_url(gateway))
    await client.sign_up()
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        block = os.urandom(65536)
        while sent < LIMIT * 3:
            sent += len(block)
            yield block

    try:
        response = await client.request("POST", "/api/media", data=chunks())
        status = response.status
    except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError):
        status = None  # the gateway may close before the client reads the answer
    assert status in {413, None}
    assert await wait_until(lambda: echo.finished.is_set(), timeout=5)
    record = echo.received[-1]
    assert not record.complete
    assert record.error is not None
    assert record.size <= LIMIT


async def test_chunked_upload_over_limit_answers_413_to_a_reading_client(
        make_gateway: Callable[..., Awaitable[TestServer]], browser: Browser,
        echo: EchoUpstream) -> None:
    gateway = await make_gateway(**SMALL_LIMITS)
    client = Browser(browser.session, server_url(gateway))
    token = await client.sign_up()
    head = head_for(gateway, "POST", "/api/media", token, "Transfer-Encoding: chunked\r\n")
    block = os.urandom(65536)
    chunk = f"{len(block):x}\r\n".encode() + block + b"\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(head.encode())
    answer = b""
    try:
        for _ in range(LIMIT // len(block) + 5):
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(0)
    except ConnectionError:
        pass
    answer = await asyncio.wait_for(reader.read(65536), 5)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert await wait_until(lambda: echo.finished.is_set(), timeout=5)
    assert not echo.received[-1].complete


async def disconnect_mid_upload(gateway: TestServer | ProductionServer, echo: EchoUpstream,
                                head: str,
                                parts: list[bytes]) -> None:
    """Send the head and some body, wait until the upstream is receiving, then hang up."""
    _reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(head.encode())
    for part in parts:
        writer.write(part)
    await writer.drain()
    assert await wait_until(lambda: bool(echo.received), timeout=5)
    await asyncio.sleep(0.1)
    # A FIN, not a reset: a reset could discard what was sent before it.
    writer.close()


async def test_client_disconnect_mid_upload_aborts_the_upstream_request(
        user: Browser, gateway: TestServer, echo: EchoUpstream) -> None:
    head = head_for(gateway, "POST", "/api/media", user.token or "",
                    "Content-Length: 900000\r\n")
    await disconnect_mid_upload(gateway, echo, head, [os.urandom(200_000)])
    assert await wait_until(lambda: echo.finished.is_set(), timeout=5)
    record = echo.received[-1]
    assert not record.complete
    assert record.error is not None
    assert record.size <= 200_000


async def test_body_of_declared_length_in_many_pieces_reaches_upstream_whole_with_its_length(
        user: Browser, gateway: TestServer, echo: EchoUpstream) -> None:
    # Pieces are forwarded as the socket delivers them, not joined first: many small
    # writes, each one a separate read for the gateway, must still add up to the body.
    payload = os.urandom(300_000)
    head = head_for(gateway, "POST", "/api/media", user.token or "",
                    f"Content-Length: {len(payload)}\r\n")
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        writer.write(head.encode())
        for start in range(0, len(payload), 7_000):
            writer.write(payload[start:start + 7_000])
            await writer.drain()
            await asyncio.sleep(0.001)
        answer = await asyncio.wait_for(read_response(reader), 5)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 200 ")
    record = echo.received[-1]
    assert record.complete
    assert record.headers["Content-Length"] == str(len(payload))
    assert record.size == len(payload)
    assert record.sha256 == hashlib.sha256(payload).hexdigest()


async def test_body_longer_than_declared_goes_upstream_only_up_to_the_declared_length(
        user: Browser, gateway: TestServer, echo: EchoUpstream) -> None:
    payload = os.urandom(100_000)
    head = head_for(gateway, "POST", "/api/media", user.token or "",
                    f"Content-Length: {len(payload)}\r\n")
    # What follows the declared length is not body but the connection's next request.
    after = f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{gateway.port}\r\n\r\n".encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        writer.write(head.encode() + payload + after)
        await writer.drain()
        first = await asyncio.wait_for(read_response(reader), 5)
        second = await asyncio.wait_for(read_response(reader), 5)
    finally:
        writer.close()
    assert first.startswith(b"HTTP/1.1 200 ")
    assert second.startswith(b"HTTP/1.1 200 ")
    assert len(echo.received) == 1
    record = echo.received[-1]
    assert record.complete
    assert record.size == len(payload)
    assert record.sha256 == hashlib.sha256(payload).hexdigest()


async def test_body_shorter_than_declared_aborts_the_upstream_request(
        user: Browser, gateway: TestServer, echo: EchoUpstream) -> None:
    head = head_for(gateway, "POST", "/api/media", user.token or "",
                    "Content-Length: 300000\r\n")
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        writer.write(head.encode() + os.urandom(250_000))
        await writer.drain()
        assert await wait_until(lambda: bool(echo.received), timeout=5)
        # Half-close: the client is done sending though it promised 50,000 more bytes,
        # and it still listens for an answer.
        writer.write_eof()
        answer = await asyncio.wait_for(reader.read(65536), 5)
    finally:
        writer.close()
    assert await wait_until(lambda: echo.finished.is_set(), timeout=5)
    record = echo.received[-1]
    assert not record.complete
    assert record.error is not None
    assert record.size < 300_000
    assert not answer.startswith(b"HTTP/1.1 2")


async def read_response(reader: asyncio.StreamReader) -> bytes:
    """One HTTP/1.1 answer with a Content-Length, head and body."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = re.search(rb"(?im)^content-length:\s*(\d+)\r$", head)
    body = await reader.readexactly(int(length.group(1))) if length else b""
    return head + body


async def test_client_disconnect_mid_chunked_upload_aborts_the_upstream_request(
        user: Browser, gateway: TestServer, echo: EchoUpstream) -> None:
    head = head_for(gateway, "POST", "/api/media", user.token or "",
                    "Transfer-Encoding: chunked\r\n")
    block = os.urandom(50_000)
    chunk = f"{len(block):x}\r\n".encode() + block + b"\r\n"
    await disconnect_mid_upload(gateway, echo, head, [chunk, chunk])
    assert await wait_until(lambda: echo.finished.is_set(), timeout=5)
    assert not echo.received[-1].complete
    assert echo.received[-1].error is not None


async def test_client_disconnect_mid_upload_aborts_upstream_without_handler_cancellation(
        user: Browser, env_for: Callable[..., dict[str, str]], echo: EchoUpstream) -> None:
    # Served as in production, where aiohttp does not cancel the handler when the client
    # leaves: the body stream itself must notice and abort the upstream request.
    async with ProductionServer(create_app(load_settings(env_for()))) as gateway:
        head = (f"POST /api/media HTTP/1.1\r\nHost: 127.0.0.1:{gateway.port}\r\n"
                f"Cookie: {AUTH_COOKIE}={user.token}\r\nOrigin: http://127.0.0.1:{gateway.port}\r\n"
                "Content-Length: 900000\r\n\r\n")
        await disconnect_mid_upload(gateway, echo, head, [os.urandom(200_000)])
        assert await wait_until(lambda: echo.finished.is_set(), timeout=5)
        assert not echo.received[-1].complete
        assert echo.received[-1].error is not None


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_upstream_down_is_502_without_internals(
        make_gateway: Callable[..., Awaitable[TestServer]], browser: Browser) -> None:
    port = closed_port()
    gateway = await make_gateway(**{"Upstreams__Media": f"http://127.0.0.1:{port}"})
    client = Browser(browser.session, server_url(gateway))
    await client.sign_up()
    response = await client.request("GET", "/api/media")
    assert response.status == 502
    assert response.content_type == "application/problem+json"
    text = await response.text()
    body = await response.json()
    assert body["code"] == "bad_gateway"
    assert body["requestId"] == response.headers["X-Request-ID"]
    for leak in (str(port), "127.0.0.1", "Connect", "Errno", "refused", "Traceback"):
        assert leak not in text
    assert (await client.request("GET", "/ready")).status == 503


async def test_upstream_timeout_is_504(make_gateway: Callable[..., Awaitable[TestServer]],
                                       user: Browser) -> None:
    gateway = await make_gateway(**{"Upstreams__ReadTimeoutSeconds": "0.3"})
    client = Browser(user.session, server_url(gateway), token=user.token)
    response = await client.request("GET", "/api/media?sleep=2")
    assert response.status == 504
    assert (await response.json())["code"] == "gateway_timeout"


async def test_direct_calls_to_auth_and_media_without_internal_token_are_refused(
        auth_server: TestServer, http: aiohttp.ClientSession, user: Browser) -> None:
    # With the user's own cookie, straight at auth: still refused.
    response = await http.get(f"{server_url(auth_server)}/auth/me",
                              headers={"Cookie": f"{AUTH_COOKIE}={user.token}"})
    assert response.status == 401
    response = await http.post(f"{server_url(auth_server)}/auth/login",
                               json={"username": "Runner", "password": "x" * 12})
    assert response.status == 401


async def test_forwarded_for_sets_the_client_ip_only_from_a_trusted_peer(
        make_gateway: Callable[..., Awaitable[TestServer]], user: Browser, echo: EchoUpstream,
        internal_key: str) -> None:
    spoofed = {"X-Forwarded-For": "198.51.100.23"}
    untrusted = Browser(user.session, user.base, token=user.token)
    assert (await untrusted.request("GET", "/api/media", headers=spoofed)).status == 200
    claims = identity_claims(internal_key, "media", echo.received[-1].headers["X-Tempo-Identity"])
    assert claims.extra["ip"] == "127.0.0.1"

    gateway = await make_gateway(**{"Proxy__TrustedNetworks": "127.0.0.1/32"})
    trusted = Browser(user.session, server_url(gateway), token=user.token)
    assert (await trusted.request("GET", "/api/media", headers=spoofed)).status == 200
    claims = identity_claims(internal_key, "media", echo.received[-1].headers["X-Tempo-Identity"])
    assert claims.extra["ip"] == "198.51.100.23"



async def test_stalled_upload_is_408_and_the_upstream_request_aborted(
        make_gateway: Callable[..., Awaitable[TestServer]], user: Browser,
        echo: EchoUpstream) -> None:
    gateway = await make_gateway(**{"Limits__BodyIdleTimeoutSeconds": "0.3"})
    head = head_for(gateway, "POST", "/api/media", user.token or "",
                    "Content-Length: 100000\r\n")
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        writer.write(head.encode() + os.urandom(1000))
        await writer.drain()
        # ...and nothing more: the gateway gives up on the body, not the client on it.
        answer = await asyncio.wait_for(reader.read(65536), 5)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b"request_timeout" in answer
    assert await wait_until(lambda: echo.finished.is_set(), timeout=5)
    assert not echo.received[-1].complete
