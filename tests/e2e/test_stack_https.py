"""The whole stack behind Debian's nginx with the shipped configuration, over TLS."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import socket
import ssl
import warnings
from http.cookies import SimpleCookie

import aiohttp
import pytest
from yarl import URL

from deploy.nginx_local import LocalNginx, NginxProcess
from deploy.stack import free_port
from tests.e2e.support_edge import (
    PASSWORD,
    SECURITY_HEADERS,
    assert_fsck_clean,
    client_context,
    media_tree,
    mp4_file,
    png_bytes,
    session,
    sign_in,
)
from tests.support import AUTH_COOKIE

pytestmark = pytest.mark.timeout(300)


def handshake(edge, version: ssl.TLSVersion) -> str:
    context = client_context(edge.ca_file)
    if version < ssl.TLSVersion.TLSv1_2:
        # The client must be willing to speak the old protocol, or a refusal would prove
        # nothing about the server.
        context.set_ciphers("ALL:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = version
        context.maximum_version = version
    with socket.create_connection(("127.0.0.1", edge.https_port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as tls:
        return tls.version() or ""


async def test_plain_http_redirects_to_https_with_path_and_query(edge):
    async with aiohttp.ClientSession() as client, client.get(
            f"{edge.http_url}/api/media?limit=5", allow_redirects=False) as response:
        assert response.status == 301
        assert response.headers["Location"] == f"{edge.https_url}/api/media?limit=5"


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_tls_1_0_and_1_1_are_refused(edge, version):
    with pytest.raises(ssl.SSLError) as refused:
        handshake(edge, version)
    # Refused by the server, not given up by a client that could not offer the version.
    assert "NO_PROTOCOLS_AVAILABLE" not in str(refused.value)


@pytest.mark.parametrize(("version", "name"), [(ssl.TLSVersion.TLSv1_2, "TLSv1.2"),
                                               (ssl.TLSVersion.TLSv1_3, "TLSv1.3")])
def test_tls_1_2_and_1_3_are_accepted(edge, version, name):
    assert handshake(edge, version) == name


async def wait_for_tree(stack, expected: dict[str, int], timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while (tree := media_tree(stack)) != expected:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"media root holds {tree}, expected {expected}")
        await asyncio.sleep(0.2)


def assert_security_headers_once(response: aiohttp.ClientResponse) -> None:
    """Each security header exactly once, whatever the upstream added."""
    names = [name.decode().lower() for name, _ in response.raw_headers]
    for header in SECURITY_HEADERS:
        assert names.count(header.lower()) == 1, (header, response.status, names)
    assert response.headers["Strict-Transport-Security"].startswith("max-age=")
    assert names.count("server") <= 1
    assert response.headers.get("Server", "nginx") == "nginx"


async def test_user_journey_over_https_with_a_cookie_jar(edge):
    image = png_bytes()
    async with session(edge) as client:
        await sign_in(client, edge)
        cookie = client.cookie_jar.filter_cookies(URL(edge.https_url)).get(AUTH_COOKIE)
        assert cookie is not None
        assert cookie.value

        async with client.get(f"{edge.https_url}/api/auth/me") as response:
            assert response.status == 200
            assert_security_headers_once(response)

        form = aiohttp.FormData()
        form.add_field("caption", "after the race")
        form.add_field("file", image, filename="finish line.png", content_type="image/png")
        async with client.post(f"{edge.https_url}/api/media", data=form) as response:
            assert response.status == 201, await response.text()
            assert_security_headers_once(response)
            item = (await response.json())["items"][0]
        media_id = item["id"]

        async with client.get(f"{edge.https_url}/api/media") as response:
            assert response.status == 200
            listed = await response.json()
        assert media_id in [entry["id"] for entry in listed["items"]]

        async with client.get(f"{edge.https_url}/api/media/{media_id}/content") as response:
            assert response.status == 200
            assert await response.read() == image
            assert_security_headers_once(response)
            # media's sandbox policy reaches the browser as a further policy in the same
            # field (each is enforced), not loosened by anyone on the way.
            policies = response.headers["Content-Security-Policy"].split(",")
            assert [policy.strip() for policy in policies][1:] == [
                "sandbox; default-src 'none'"]

        async with client.get(f"{edge.https_url}/api/media/{media_id}/content",
                              headers={"Range": "bytes=8-23"}) as response:
            assert response.status == 206
            assert await response.read() == image[8:24]
            assert response.headers["Content-Range"] == f"bytes 8-23/{len(image)}"

        async with client.delete(f"{edge.https_url}/api/media/{media_id}") as response:
            assert response.status == 204
        async with client.get(f"{edge.https_url}/api/media/{media_id}") as response:
            assert response.status == 404
            assert_security_headers_once(response)

        async with client.post(f"{edge.https_url}/api/auth/logout") as response:
            assert response.status in (200, 204)
        async with client.get(f"{edge.https_url}/api/auth/me") as response:
            assert response.status == 401
            assert_security_headers_once(response)
    assert_fsck_clean(edge.stack)


async def test_login_cookie_is_httponly_secure_samesite_lax_as_the_browser_receives_it(edge):
    async with session(edge) as client:
        await sign_in(client, edge)
        async with client.post(f"{edge.https_url}/api/auth/login",
                               json={"username": "runner", "password": PASSWORD}) as response:
            assert response.status == 200
            headers = response.headers.getall("Set-Cookie")
    assert len(headers) == 1
    morsel = SimpleCookie(headers[0])[AUTH_COOKIE]
    assert morsel["httponly"] is True
    assert morsel["secure"] is True
    assert morsel["samesite"].lower() == "lax"
    assert morsel["path"] == "/"
    assert int(morsel["max-age"]) == 7 * 86400
    assert not morsel["domain"]


async def test_static_page_and_errors_carry_each_security_header_once(edge):
    async with session(edge) as client:
        for path in ("/", "/api/media", "/does-not-exist"):
            async with client.get(f"{edge.https_url}{path}") as response:
                assert_security_headers_once(response)


async def test_a_100_mb_upload_streams_through_nginx_gateway_and_media(edge, tmp_path):
    path = tmp_path / "long-run.mp4"
    size = 100 * 1024 * 1024
    digest = mp4_file(path, size)
    async with session(edge) as client:
        await sign_in(client, edge)
        with path.open("rb") as handle:
            form = aiohttp.FormData()
            form.add_field("file", handle, filename="long-run.mp4", content_type="video/mp4")
            async with client.post(f"{edge.https_url}/api/media", data=form) as response:
                assert response.status == 201, await response.text()
                item = (await response.json())["items"][0]
        assert item["sizeBytes"] == size
        assert item["sha256"] == digest
        received = hashlib.sha256()
        async with client.get(f"{edge.https_url}/api/media/{item['id']}/content") as response:
            assert response.status == 200
            async for chunk in response.content.iter_chunked(1024 * 1024):
                received.update(chunk)
        assert received.hexdigest() == digest
        async with client.delete(f"{edge.https_url}/api/media/{item['id']}") as response:
            assert response.status == 204
    assert_fsck_clean(edge.stack)


async def test_an_upload_over_the_limit_is_refused_without_reaching_media_disk(edge):
    before = media_tree(edge.stack)
    limit = edge.media_limit_bytes
    async with session(edge) as client:
        await sign_in(client, edge)
        # A declared length over the limit: refused on the headers alone.
        async with client.post(f"{edge.https_url}/api/media", data=b"x" * 1024,
                               headers={"Content-Length": str(limit * 2),
                                        "Content-Type": "multipart/form-data; boundary=b"},
                               ) as response:
            assert response.status == 413
            assert response.content_type == "application/problem+json"
            assert_security_headers_once(response)

        # A chunked body that only turns out too large while streaming.
        block = b"\0" * (1024 * 1024)

        async def body():
            yield (b"--b\r\nContent-Disposition: form-data; name=\"file\"; "
                   b"filename=\"big.mp4\"\r\nContent-Type: video/mp4\r\n\r\n"
                   b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2")
            for _ in range(limit // len(block) + 4):
                yield block

        try:
            async with client.post(f"{edge.https_url}/api/media", data=body(),
                                   headers={"Content-Type": "multipart/form-data; boundary=b"},
                                   ) as response:
                assert response.status == 413
        except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError):
            pass  # the server may close the connection as soon as it has answered 413
    # A chunked body reaches media's temporary area before anyone can know its size; the
    # aborted upload must leave nothing once media has noticed the abort.
    await wait_for_tree(edge.stack, before)
    assert_fsck_clean(edge.stack)


async def test_a_client_sent_x_forwarded_for_is_replaced_by_nginx_not_believed(edge):
    spoofed = {"X-Forwarded-For": "203.0.113.9", "X-Real-IP": "203.0.113.9"}
    async with session(edge) as client:
        await sign_in(client, edge)
        async with client.post(f"{edge.https_url}/api/auth/login", headers=spoofed,
                               json={"username": "runner", "password": PASSWORD}) as response:
            assert response.status == 200
        async with client.get(f"{edge.https_url}/api/auth/sessions",
                              headers=spoofed) as response:
            assert response.status == 200
            sessions = await response.json()
    ips = {entry["ip"] for entry in sessions["sessions"]}
    assert "127.0.0.1" in ips
    assert "203.0.113.9" not in ips


async def test_nginx_coarse_login_limit_answers_429_with_headers_once(edge, tmp_path):
    # An nginx of this test's own, so its rate-limit zones start empty and fill up without
    # slowing the other tests down.
    https_port, http_port = free_port(), free_port()
    own = NginxProcess(LocalNginx(tmp_path, edge.stack.service_url("gateway").split("//")[1],
                                  edge.tls.cert_file, edge.tls.key_file, http_port,
                                  https_port), nginx=edge.nginx.nginx)
    await asyncio.to_thread(own.start)
    try:
        url = f"https://localhost:{https_port}/api/auth/login"
        body = {"username": f"nobody-{secrets.token_hex(4)}", "password": "wrong password 1"}
        answers = []
        async with session(edge) as client:
            for _ in range(40):
                async with client.post(url, json=body) as response:
                    assert response.content_type == "application/problem+json"
                    answers.append((response.status, (await response.json())["code"]))
                    if response.status == 429:
                        assert_security_headers_once(response)
        assert answers[0][0] == 401
        # nginx's own answer, not the auth service's lockout (also a 429)
        assert (429, "proxy_error") in answers
    finally:
        await asyncio.to_thread(own.stop)
