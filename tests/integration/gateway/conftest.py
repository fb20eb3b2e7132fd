"""Fixtures for the gateway: the real auth app, a test upstream or the real media app, the
gateway itself, all on loopback, on the test's own database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from services.auth.app import create_app as create_auth_app
from services.auth.settings import load_settings as load_auth_settings
from services.media.app import create_app as create_media_app
from services.media.settings import load_settings as load_media_settings
from tests.integration.gateway.gateway_helpers import (
    Browser,
    EchoUpstream,
    gateway_env,
    server_url,
    start_gateway,
)


@pytest.fixture
async def auth_server(aiohttp_server: Any, base_env: dict[str, str]) -> TestServer:
    env = {**base_env, "Auth__BcryptCost": "10", "Auth__HashQueueSize": "256"}
    return await aiohttp_server(create_auth_app(load_auth_settings(env)))


@pytest.fixture
def echo() -> EchoUpstream:
    return EchoUpstream()


@pytest.fixture
async def echo_server(aiohttp_server: Any, echo: EchoUpstream) -> TestServer:
    return await aiohttp_server(echo.app())


@pytest.fixture
def env_for(base_env: dict[str, str], auth_server: TestServer, echo_server: TestServer
            ) -> Callable[..., dict[str, str]]:
    def make(**extra: str) -> dict[str, str]:
        return gateway_env(base_env, auth_url=server_url(auth_server),
                           media_url=server_url(echo_server), **extra)

    return make


@pytest.fixture
def make_gateway(aiohttp_server: Any, env_for: Callable[..., dict[str, str]]
                 ) -> Callable[..., Awaitable[TestServer]]:
    async def make(env: dict[str, str] | None = None, **extra: str) -> TestServer:
        return await start_gateway(aiohttp_server, env or env_for(**extra))

    return make


@pytest.fixture
async def gateway(make_gateway: Callable[..., Awaitable[TestServer]]) -> TestServer:
    return await make_gateway()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # A fresh session with no cookie jar: every test states the cookies it sends.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield session


@pytest.fixture
def browser(http: aiohttp.ClientSession, gateway: TestServer) -> Browser:
    return Browser(http, server_url(gateway))


@pytest.fixture
async def user(browser: Browser) -> Browser:
    """The browser, signed up and signed in."""
    await browser.sign_up()
    return browser


@pytest.fixture
async def real_media(aiohttp_server: Any, base_env: dict[str, str], tmp_path: Path
                     ) -> TestServer:
    env = {**base_env, "MediaStorage__RootPath": str(tmp_path / "media-root")}
    return await aiohttp_server(create_media_app(load_media_settings(env)))


@pytest.fixture
async def real_stack(aiohttp_server: Any, base_env: dict[str, str], auth_server: TestServer,
                     real_media: TestServer, http: aiohttp.ClientSession) -> Browser:
    """A browser signed in to a gateway in front of the real auth and media apps."""
    env = gateway_env(base_env, auth_url=server_url(auth_server),
                      media_url=server_url(real_media),
                      RateLimit__GlobalPerMinute="100000", RateLimit__GlobalBurst="10000",
                      RateLimit__AuthPerMinute="100000", RateLimit__AuthBurst="10000")
    gateway = await start_gateway(aiohttp_server, env)
    browser = Browser(http, server_url(gateway))
    await browser.sign_up()
    return browser
