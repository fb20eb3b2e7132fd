"""Revoked tokens are refused at once, across gateways, and after the listener reconnects;
while it is away, the grace period and then failing closed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit

import asyncpg
import jwt
import pytest
from aiohttp.test_utils import TestServer

from services.gateway.keys import LISTENER, REVOKED
from shared.config import Secret
from tests.integration.gateway.gateway_helpers import Browser, TcpRelay, server_url, wait_until


def jti_of(token: str) -> str:
    return jwt.decode(token, options={"verify_signature": False})["jti"]


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_url)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def relay(database_url: str) -> AsyncIterator[TcpRelay]:
    parts = urlsplit(database_url)
    relay = TcpRelay(parts.hostname or "127.0.0.1", parts.port or 5432)
    await relay.start()
    try:
        yield relay
    finally:
        await relay.cut()


async def test_token_is_refused_on_the_next_request_after_logout(user: Browser) -> None:
    assert (await user.request("GET", "/api/auth/me")).status == 200
    assert (await user.request("POST", "/api/auth/logout")).status in {200, 204}
    response = await user.request("GET", "/api/auth/me")
    assert response.status == 401
    assert (await user.request("GET", "/api/media")).status == 401


async def test_logout_on_one_gateway_is_refused_by_another_sharing_the_database(
        user: Browser, make_gateway: Callable[..., Awaitable[TestServer]]) -> None:
    other = await make_gateway()
    elsewhere = Browser(user.session, server_url(other), token=user.token)
    assert (await elsewhere.request("GET", "/api/auth/me")).status == 200
    assert (await elsewhere.request("GET", "/api/media")).status == 200  # cached as valid
    assert (await user.request("POST", "/api/auth/logout")).status in {200, 204}
    other_app = other.app
    assert other_app is not None
    # The notification travels through PostgreSQL; it is applied the moment it arrives.
    assert await wait_until(lambda: jti_of(user.token) in other_app[REVOKED], timeout=3)
    assert (await elsewhere.request("GET", "/api/media")).status == 401


async def test_password_change_revokes_the_other_sessions_on_every_gateway(
        user: Browser, gateway: TestServer,
        make_gateway: Callable[..., Awaitable[TestServer]]) -> None:
    first_token = user.token
    other = await make_gateway()
    second = Browser(user.session, server_url(other))
    assert (await second.login()).status == 200
    assert (await second.request("GET", "/api/auth/me")).status == 200
    response = await second.request("POST", "/api/auth/password", json={
        "currentPassword": "violet-harbor-tangent-42",
        "newPassword": "copper-meadow-quantum-77"})
    assert response.status in {200, 204}, await response.text()
    gateway_app = gateway.app
    assert gateway_app is not None
    assert await wait_until(lambda: jti_of(first_token) in gateway_app[REVOKED], timeout=3)
    assert (await user.request("GET", "/api/auth/me")).status == 401


async def test_session_delete_through_one_gateway_is_refused_by_the_other(
        user: Browser, make_gateway: Callable[..., Awaitable[TestServer]]) -> None:
    other = await make_gateway()
    second = Browser(user.session, server_url(other))
    assert (await second.login()).status == 200
    sessions = await (await user.session.get(
        f"{user.base}/api/auth/sessions",
        headers=user.headers("GET"))).json()
    items = sessions["sessions"] if isinstance(sessions, dict) else sessions
    target = next(item for item in items if not item.get("current"))
    response = await user.request("DELETE", f"/api/auth/sessions/{target['id']}")
    assert response.status in {200, 204}, await response.text()
    other_app = other.app
    assert other_app is not None
    assert await wait_until(lambda: jti_of(second.token) in other_app[REVOKED], timeout=3)
    assert (await second.request("GET", "/api/auth/me")).status == 401


async def test_revocation_missed_while_disconnected_is_loaded_after_reconnect_and_grace_then_503(
        browser: Browser, relay: TcpRelay, make_gateway: Callable[..., Awaitable[TestServer]],
        env_for: Callable[..., dict[str, str]], database_url: str,
        db: asyncpg.Connection) -> None:
    token = await browser.sign_up()
    env = env_for(**{"Revocation__GraceSeconds": "1",
                     "Revocation__CheckIntervalSeconds": "0.1",
                     "Revocation__ReconnectDelaySeconds": "0.2"})
    env["Database__Url"] = Secret(relay.url(env["Database__Url"])).reveal()
    gateway = await make_gateway(env)
    app = gateway.app
    assert app is not None
    client = Browser(browser.session, server_url(gateway), token=token)
    assert (await client.request("GET", "/api/media")).status == 200

    await relay.cut()
    assert await wait_until(lambda: not app[LISTENER].connected, timeout=3)
    # Within the grace period the last known set still decides.
    assert (await client.request("GET", "/api/media")).status == 200
    # A revocation committed now is announced to nobody listening through the relay.
    await db.execute("UPDATE auth.sessions SET revoked_at = now() WHERE jti = $1",
                     jti_of(token))
    await asyncio.sleep(1.2)
    refused = await client.request("GET", "/api/media")
    assert refused.status == 503
    assert refused.headers["Retry-After"] == "5"
    assert (await refused.json())["code"] == "revocation_unavailable"
    # Public routes do not depend on the revocation set.
    assert (await client.request("GET", "/api/auth/registration-available")).status == 200

    await relay.restore()
    assert await wait_until(lambda: app[LISTENER].connected, timeout=5)
    assert jti_of(token) in app[REVOKED]
    assert (await client.request("GET", "/api/media")).status == 401


async def test_gateway_started_without_its_database_fails_closed_then_recovers(
        browser: Browser, relay: TcpRelay, make_gateway: Callable[..., Awaitable[TestServer]],
        env_for: Callable[..., dict[str, str]]) -> None:
    token = await browser.sign_up()
    await relay.cut()
    env = env_for(**{"Revocation__ReconnectDelaySeconds": "0.1"})
    env["Database__Url"] = relay.url(env["Database__Url"])
    gateway = await make_gateway(env)
    app = gateway.app
    assert app is not None
    client = Browser(browser.session, server_url(gateway), token=token)
    assert (await client.request("GET", "/api/media")).status == 503
    assert (await client.request("GET", "/ready")).status == 503
    assert (await client.request("GET", "/api/auth/registration-available")).status == 200
    await relay.restore()
    assert await wait_until(lambda: app[LISTENER].connected, timeout=5)
    assert (await client.request("GET", "/api/media")).status == 200
    assert (await client.request("GET", "/ready")).status == 200

