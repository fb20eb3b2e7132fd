"""Through the gateway to the real media app: an upload works, and an oversize one, cut
by the gateway mid-stream or refused on its declared length, leaves no file and no row."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestServer

from services.media.app import create_app as create_media_app
from services.media.settings import load_settings as load_media_settings
from tests.integration.gateway.gateway_helpers import (
    BOUNDARY,
    Browser,
    gateway_env,
    multipart,
    png_bytes,
    server_url,
    start_gateway,
)
from tests.support import AUTH_COOKIE

FILE_LIMIT = 100_000
OVERHEAD = 8_192


def stored_files(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*") if path.is_file())


@pytest.fixture
async def media_server(aiohttp_server: Any, base_env: dict[str, str], tmp_path: Path
                       ) -> TestServer:
    env = {**base_env, "MediaStorage__RootPath": str(tmp_path / "media-root"),
           "MediaStorage__MaxFileSizeBytes": str(FILE_LIMIT)}
    return await aiohttp_server(create_media_app(load_media_settings(env)))


@pytest.fixture
async def client(aiohttp_server: Any, base_env: dict[str, str], auth_server: TestServer,
                 media_server: TestServer, browser: Browser) -> Browser:
    env = gateway_env(base_env, auth_url=server_url(auth_server),
                      media_url=server_url(media_server),
                      MediaStorage__MaxFileSizeBytes=str(FILE_LIMIT),
                      Limits__MultipartOverheadBytes=str(OVERHEAD))
    gateway = await start_gateway(aiohttp_server, env)
    result = Browser(browser.session, server_url(gateway))
    await result.sign_up()
    return result


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_url)
    try:
        yield connection
    finally:
        await connection.close()


async def media_rows(db: asyncpg.Connection) -> int:
    return await db.fetchval("SELECT count(*) FROM media.media")


async def test_upload_through_the_gateway_reaches_real_media(client: Browser,
                                                             tmp_path: Path) -> None:
    body = multipart("dot.png", png_bytes(), "image/png")
    response = await client.request("POST", "/api/media", data=body, headers={
        "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
    assert response.status == 201, await response.text()
    item = (await response.json())["items"][0]
    listed = await client.request("GET", "/api/media")
    assert [entry["id"] for entry in (await listed.json())["items"]] == [item["id"]]
    content = await client.request("GET", f"/api/media/{item['id']}/content")
    assert content.status == 200
    assert await content.read() == png_bytes()
    # media's sandbox policy survives next to the gateway's own, in the one header field.
    (csp,) = content.headers.getall("Content-Security-Policy")
    assert [policy.strip().split(";")[0] for policy in csp.split(",")] == [
        "default-src 'self'", "sandbox"]


async def test_upload_over_limit_chunked_is_413_and_leaves_no_file_in_media(
        client: Browser, tmp_path: Path, db: asyncpg.Connection) -> None:
    root = tmp_path / "media-root"
    files_before, rows_before = stored_files(root), await media_rows(db)
    # A JPEG start, then far more than the limit: the gateway cuts it mid-stream.
    body = multipart("big.jpg", b"\xff\xd8\xff\xe0" + os.urandom(FILE_LIMIT * 3), "image/jpeg")

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 32_768):
            yield body[start:start + 32_768]

    try:
        response = await client.request("POST", "/api/media", data=chunks(), headers={
            "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
        assert response.status == 413
    except OSError:
        pass  # the connection may close before the client reads the 413
    # Whatever media had started writing is gone once it sees the aborted request.
    for _ in range(50):
        if stored_files(root) == files_before:
            break
        await asyncio.sleep(0.1)
    assert stored_files(root) == files_before
    assert await media_rows(db) == rows_before


async def test_upload_over_limit_by_content_length_is_413_and_never_reaches_media(
        client: Browser, tmp_path: Path, db: asyncpg.Connection) -> None:
    root = tmp_path / "media-root"
    files_before, rows_before = stored_files(root), await media_rows(db)
    body = multipart("big.jpg", b"\xff\xd8\xff\xe0" + os.urandom(FILE_LIMIT + OVERHEAD),
                     "image/jpeg")
    try:
        response = await client.request("POST", "/api/media", data=body, headers={
            "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
        assert response.status == 413
    except OSError:
        pass
    assert stored_files(root) == files_before
    assert await media_rows(db) == rows_before


async def test_direct_call_to_media_without_the_internal_token_is_refused(
        media_server: TestServer, client: Browser) -> None:
    base = server_url(media_server)
    for method, path in (("GET", "/media"), ("POST", "/media"), ("GET", "/imports"),
                         ("GET", "/export")):
        response = await client.session.request(
            method, f"{base}{path}",
            headers={"Cookie": f"{AUTH_COOKIE}={client.token}", "X-Tempo-Identity": "forged"})
        assert response.status == 401, (method, path)


async def test_upload_below_the_minimum_rate_is_408_and_leaves_no_file_in_media(
        aiohttp_server: Any, base_env: dict[str, str], auth_server: TestServer,
        media_server: TestServer, browser: Browser, tmp_path: Path,
        db: asyncpg.Connection) -> None:
    env = gateway_env(base_env, auth_url=server_url(auth_server),
                      media_url=server_url(media_server),
                      MediaStorage__MaxFileSizeBytes=str(FILE_LIMIT),
                      Limits__MultipartOverheadBytes=str(OVERHEAD),
                      Limits__StreamMinBytesPerSecond="2000",
                      Limits__StreamRateWindowSeconds="1",
                      Limits__BodyIdleTimeoutSeconds="30")
    gateway = await start_gateway(aiohttp_server, env)
    slow = Browser(browser.session, server_url(gateway))
    token = await slow.sign_up()
    root = tmp_path / "media-root"
    files_before, rows_before = stored_files(root), await media_rows(db)
    body = multipart("slow.jpg", b"\xff\xd8\xff\xe0" + os.urandom(60_000), "image/jpeg")
    head = (f"POST /api/media HTTP/1.1\r\nHost: 127.0.0.1:{gateway.port}\r\n"
            f"Cookie: {AUTH_COOKIE}={token}\r\nOrigin: http://127.0.0.1:{gateway.port}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        writer.write(head + body[:20_000])
        await writer.drain()
        # media has begun writing the file when the trickle starts.
        for _ in range(50):
            if stored_files(root) != files_before:
                break
            await asyncio.sleep(0.02)
        assert stored_files(root) != files_before
        answer = asyncio.ensure_future(reader.read(65536))
        # About 200 bytes a second, a tenth of the rate asked for, for five seconds at most.
        for sent in range(20_000, 30_000, 20):
            if answer.done():
                break
            writer.write(body[sent:sent + 20])
            await writer.drain()
            await asyncio.sleep(0.1)
        status_line = (await asyncio.wait_for(answer, 5)).split(b"\r\n", 1)[0]
    finally:
        writer.close()
    assert status_line.startswith(b"HTTP/1.1 408 ")
    for _ in range(50):
        if stored_files(root) == files_before:
            break
        await asyncio.sleep(0.1)
    assert stored_files(root) == files_before
    assert await media_rows(db) == rows_before
