"""``GET /api/audit`` through the gateway, with the real auth and media services behind it:
the caller's records from both trails, newest first, paged without gaps or repeats, and
nobody else's."""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestServer

from services.media.app import create_app as create_media_app
from services.media.settings import load_settings as load_media_settings
from tests.integration.gateway.gateway_helpers import (
    Browser,
    gateway_env,
    server_url,
    start_gateway,
)


@pytest.fixture
async def media_server(aiohttp_server: Any, base_env: dict[str, str], tmp_path: Path
                       ) -> TestServer:
    env = {**base_env, "MediaStorage__RootPath": str(tmp_path / "media")}
    return await aiohttp_server(create_media_app(load_media_settings(env)))


@pytest.fixture
async def audit_gateway(aiohttp_server: Any, base_env: dict[str, str], auth_server: TestServer,
                        media_server: TestServer) -> TestServer:
    env = gateway_env(base_env, auth_url=server_url(auth_server),
                      media_url=server_url(media_server))
    return await start_gateway(aiohttp_server, env)


async def page_through(browser: Browser, limit: int) -> tuple[list[dict], list[int]]:
    items: list[dict] = []
    sizes: list[int] = []
    path = f"/api/audit?limit={limit}"
    while True:
        response = await browser.request("GET", path)
        body = await response.json()
        assert response.status == 200, body
        sizes.append(len(body["items"]))
        items += body["items"]
        if body["nextCursor"] is None:
            return items, sizes
        path = f"/api/audit?limit={limit}&cursor={body['nextCursor']}"


async def test_audit_pages_both_trails_newest_first_and_only_the_callers(
        http, audit_gateway, database_url) -> None:
    browser = Browser(http, server_url(audit_gateway))
    await browser.sign_up()
    token = browser.token
    assert (await browser.login(password="wrong-password-entirely")).status == 401
    browser.token = token
    for _ in range(3):
        assert (await browser.request("DELETE", f"/api/media/{uuid.uuid4()}")).status == 404
    me = await (await browser.request("GET", "/api/auth/me")).json()
    someone_else = str(uuid.uuid4())
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(
            "INSERT INTO auth.auth_events (event, outcome, user_id, actor)"
            " VALUES ('login', 'failure', $1::uuid, $1::text)", someone_else)
        await connection.execute(
            "INSERT INTO media.audit_events (action, outcome, actor, user_id)"
            " VALUES ('media_delete', 'success', $1::text, $1::uuid)", someone_else)
    finally:
        await connection.close()

    for limit in (1, 2, 4, 100):
        items, sizes = await page_through(browser, limit)
        mine = [item for item in items if item["actor"] != "admin"]
        assert {item["actor"] for item in mine} == {me["userId"]}
        assert [(i["service"], i["action"], i["outcome"]) for i in mine] == [
            ("media", "media_delete", "not_found")] * 3 + [
            ("auth", "login", "failure"), ("auth", "login", "success"),
            ("auth", "register", "success")]
        times = [datetime.fromisoformat(item["time"]) for item in items]
        assert times == sorted(times, reverse=True)
        assert all(size == limit for size in sizes[:-1])
        assert all(item["clientIp"] == "127.0.0.1" and item["requestId"] for item in mine)
        assert all(set(item) == {"time", "service", "action", "outcome", "actor", "clientIp",
                                 "requestId", "detail", "count", "lastTime"} for item in items)


async def test_repeated_failed_logins_show_as_one_counted_record(http, audit_gateway) -> None:
    browser = Browser(http, server_url(audit_gateway))
    await browser.sign_up()
    token = browser.token
    for _ in range(3):
        assert (await browser.login(password="wrong-password-entirely")).status == 401
    browser.token = token
    items, _ = await page_through(browser, 100)
    failed = [item for item in items if item["outcome"] == "failure"]
    assert [(item["service"], item["action"], item["count"]) for item in failed] == [
        ("auth", "login", 3)]
    assert failed[0]["lastTime"] >= failed[0]["time"]
    assert {item["count"] for item in items if item["outcome"] != "failure"} == {1}


async def test_audit_needs_a_session(http, audit_gateway) -> None:
    response = await Browser(http, server_url(audit_gateway)).request("GET", "/api/audit")
    assert response.status == 401


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "limit=ten", "cursor=%%%",
                                   "cursor=eyJhdXRoIjoiIn0", "cursor=" + "A" * 600])
async def test_audit_refuses_bad_paging_with_400(http, audit_gateway, query) -> None:
    browser = Browser(http, server_url(audit_gateway))
    await browser.sign_up()
    response = await browser.request("GET", f"/api/audit?{query}")
    assert response.status == 400
    assert (await response.json())["code"] in {"invalid_limit", "invalid_cursor"}


async def test_audit_with_a_service_down_is_a_502_not_half_a_trail(
        http, aiohttp_server, base_env, auth_server) -> None:
    env = gateway_env(base_env, auth_url=server_url(auth_server),
                      media_url="http://127.0.0.1:9")
    gateway = await start_gateway(aiohttp_server, env)
    browser = Browser(http, server_url(gateway))
    await browser.sign_up()
    response = await browser.request("GET", "/api/audit")
    assert response.status == 502
    assert response.content_type == "application/problem+json"
