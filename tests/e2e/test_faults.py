"""Faults in the running stack: each ends with the stack answering again by itself and
``python -m services.media fsck`` clean."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import asyncpg
import pytest
import redis.asyncio as aioredis

from tests.e2e.support_edge import assert_fsck_clean, mp4_file, png_bytes, session, sign_in
from tests.support import internal_headers

pytestmark = pytest.mark.timeout(300)


async def upload_png(client: aiohttp.ClientSession, edge) -> int:
    form = aiohttp.FormData()
    form.add_field("file", png_bytes(), filename="pic.png", content_type="image/png")
    async with client.post(f"{edge.https_url}/api/media", data=form) as response:
        return response.status


async def eventually(check, *, timeout: float = 60.0, interval: float = 0.2):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not true within {timeout}s: {check.__name__}")
        await asyncio.sleep(interval)


async def test_kill_9_of_media_mid_upload_leaves_nothing_half_written(edge, tmp_path: Path):
    stack = edge.stack
    path = tmp_path / "interrupted.mp4"
    mp4_file(path, 40 * 1024 * 1024)
    async with session(edge) as client:
        await sign_in(client, edge)
        killed = asyncio.Event()

        content = path.read_bytes()

        async def slow_body():
            # No open file here: the generator is abandoned when the connection breaks.
            yield (b"--b\r\nContent-Disposition: form-data; name=\"file\"; "
                   b"filename=\"interrupted.mp4\"\r\nContent-Type: video/mp4\r\n\r\n")
            step = 256 * 1024
            for sent in range(0, len(content), step):
                yield content[sent:sent + step]
                if sent >= 8 * 1024 * 1024 and not killed.is_set():
                    # Set first: the 502 that follows may end this body mid-await.
                    killed.set()
                    await asyncio.to_thread(stack.kill, "media")
                await asyncio.sleep(0)
            yield b"\r\n--b--\r\n"

        body = slow_body()
        status = None
        try:
            async with client.post(f"{edge.https_url}/api/media", data=body,
                                   headers={"Content-Type": "multipart/form-data; boundary=b"},
                                   ) as response:
                status = response.status
        except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError,
                aiohttp.ClientPayloadError):
            status = "disconnected"
        finally:
            await body.aclose()
        assert killed.is_set(), status
        assert status in (502, 503, 504, "disconnected")

        await asyncio.to_thread(stack.wait_healthy, "media")

        async def upload_works() -> bool:
            return await upload_png(client, edge) == 201

        await eventually(upload_works)
    assert_fsck_clean(stack)


async def test_kill_9_of_auth_gives_502_or_503_never_500_then_recovers(edge):
    stack = edge.stack
    async with session(edge) as client:
        await sign_in(client, edge)
        await asyncio.to_thread(stack.kill, "auth", restart=False)
        try:
            for method, path, body in (("GET", "/api/auth/me", None),
                                       ("POST", "/api/auth/login",
                                        {"username": "runner", "password": "x" * 12}),
                                       ("GET", "/api/auth/registration-available", None)):
                async with client.request(method, f"{edge.https_url}{path}",
                                          json=body) as response:
                    assert response.status in (502, 503), (path, response.status)
                    assert response.content_type == "application/problem+json"
                    text = await response.text()
                    assert "Traceback" not in text
                    assert "127.0.0.1" not in text
            # media does not depend on auth: signed-in users keep their gallery.
            async with client.get(f"{edge.https_url}/api/media") as response:
                assert response.status == 200
        finally:
            await asyncio.to_thread(stack.start_service, "auth")

        async def me_answers() -> bool:
            async with client.get(f"{edge.https_url}/api/auth/me") as response:
                return response.status == 200

        await eventually(me_answers)
    assert_fsck_clean(stack)


@pytest.mark.parametrize("service", ["auth", "media", "gateway"])
async def test_terminated_database_connections_make_ready_503_then_recover_alone(
        edge, postgres_admin_url, service):
    stack = edge.stack
    key = (stack.stack.secrets_dir / "internal_key").read_text().strip()
    url = f"{stack.service_url(service)}/ready"
    headers = internal_headers(key, service) if service != "gateway" else {}
    role = stack.stack.role_names[service]
    async with aiohttp.ClientSession() as client:

        async def ready_status() -> int:
            async with client.get(url, headers=headers) as response:
                return response.status

        async def not_ready() -> bool:
            return await ready_status() == 503

        async def ready() -> bool:
            return await ready_status() == 200

        assert await ready_status() == 200
        admin = await asyncpg.connect(postgres_admin_url)
        try:
            # Kept out while its connections are cut, so the outage lasts long enough to be
            # seen; then let back in without touching the service.
            await admin.execute(await admin.fetchval(
                "SELECT format('ALTER ROLE %I NOLOGIN', $1::text)", role))
            try:
                terminated = await admin.fetchval(
                    "SELECT count(*) FROM (SELECT pg_terminate_backend(pid)"
                    " FROM pg_stat_activity WHERE usename = $1) AS done", role)
                assert terminated >= 1
                await eventually(not_ready, timeout=30)
            finally:
                await admin.execute(await admin.fetchval(
                    "SELECT format('ALTER ROLE %I LOGIN', $1::text)", role))
        finally:
            await admin.close()
        await eventually(ready, timeout=30)
    async with session(edge) as browser:
        await sign_in(browser, edge)
        assert await upload_png(browser, edge) == 201
    assert_fsck_clean(stack)


async def test_gateway_revocation_listener_reconnects_after_its_connection_is_killed(
        edge, postgres_admin_url):
    stack = edge.stack
    role = stack.stack.role_names["gateway"]
    admin = await asyncpg.connect(postgres_admin_url)
    try:
        assert await admin.fetchval(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE usename = $1) AS done", role) >= 1

        async def listening_again() -> bool:
            return bool(await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = $1", role))

        await eventually(listening_again, timeout=30)
    finally:
        await admin.close()
    async with session(edge) as client:
        await sign_in(client, edge)

        async def logout_is_honoured() -> bool:
            async with client.post(f"{edge.https_url}/api/auth/logout") as response:
                if response.status not in (200, 204):
                    return False
            async with client.get(f"{edge.https_url}/api/auth/me") as response:
                return response.status == 401

        await eventually(logout_is_honoured, timeout=30)
    assert_fsck_clean(stack)


async def test_redis_stopped_and_started_under_the_redis_rate_limit_backend(edge):
    stack = edge.stack
    keys = aioredis.from_url(edge.redis.url)
    try:
        async with session(edge) as client:
            await sign_in(client, edge)
            async with client.get(f"{edge.https_url}/api/media") as response:
                assert response.status == 200
            assert await keys.keys("tempo:ratelimit:*"), "the limiter does not use Redis"

            await asyncio.to_thread(edge.redis.stop)
            for _ in range(5):
                async with client.get(f"{edge.https_url}/api/media") as response:
                    # Limited in memory meanwhile: answered, never a 5xx, never unlimited.
                    assert response.status == 200
            await asyncio.to_thread(edge.redis.start)
            await keys.aclose()
            keys = aioredis.from_url(edge.redis.url)

            async def back_on_redis() -> bool:
                async with client.get(f"{edge.https_url}/api/media") as response:
                    assert response.status == 200
                return bool(await keys.keys("tempo:ratelimit:*"))

            await eventually(back_on_redis, timeout=30, interval=0.5)
    finally:
        await keys.aclose()
    assert_fsck_clean(stack)
