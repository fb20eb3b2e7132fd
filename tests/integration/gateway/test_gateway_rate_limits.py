"""Per-IP token buckets: 429 with Retry-After before any upstream, strict login budget,
a budget shared through Redis, and falling back to memory while Redis is away."""

from __future__ import annotations

import asyncio
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator

import aiohttp
import pytest
import redis
from aiohttp.test_utils import TestServer

from services.gateway import metrics
from services.gateway.keys import LIMITER
from tests.integration.gateway.gateway_helpers import Browser, EchoUpstream, server_url, wait_until
from tests.support import CI

SHARED_REDIS = "redis://127.0.0.1:6379/0"


def prefix() -> str:
    # Redis is shared with other test runs: every test gets keys of its own.
    return f"tempo-test:{secrets.token_hex(8)}:"


async def get(http: aiohttp.ClientSession, url: str, **headers: str) -> aiohttp.ClientResponse:
    response = await http.get(url, headers=headers)
    await response.read()
    return response


async def test_over_the_limit_is_429_with_retry_after_and_ratelimit_headers(
        make_gateway: Callable[..., Awaitable[TestServer]], http: aiohttp.ClientSession,
        echo: EchoUpstream) -> None:
    gateway = await make_gateway(**{"RateLimit__GlobalBurst": "3",
                                    "RateLimit__GlobalPerMinute": "6",
                                    "RateLimit__AuthPerMinute": "1"})
    url = f"{server_url(gateway)}/api/media"
    statuses = [(await get(http, url)).status for _ in range(3)]
    assert statuses == [401, 401, 401]
    refused = await get(http, url)
    assert refused.status == 429
    assert refused.content_type == "application/problem+json"
    body = await refused.json()
    assert body["code"] == "rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 10
    assert refused.headers["RateLimit-Limit"] == "3"
    assert refused.headers["RateLimit-Remaining"] == "0"
    assert int(refused.headers["RateLimit-Reset"]) >= 1
    assert refused.headers["RateLimit-Policy"] == "3;w=30"
    # The liveness probe is never limited.
    assert (await get(http, f"{server_url(gateway)}/health")).status == 200
    assert echo.received == []


async def test_limits_are_per_client_ip_behind_a_trusted_proxy(
        make_gateway: Callable[..., Awaitable[TestServer]], http: aiohttp.ClientSession) -> None:
    gateway = await make_gateway(**{"RateLimit__GlobalBurst": "2",
                                    "RateLimit__GlobalPerMinute": "2",
                                    "RateLimit__AuthPerMinute": "1",
                                    "Proxy__TrustedNetworks": "127.0.0.0/8"})
    url = f"{server_url(gateway)}/api/auth/registration-available"
    for _ in range(2):
        assert (await get(http, url, **{"X-Forwarded-For": "198.51.100.1"})).status == 200
    assert (await get(http, url, **{"X-Forwarded-For": "198.51.100.1"})).status == 429
    # Another client behind the same proxy has its own budget.
    assert (await get(http, url, **{"X-Forwarded-For": "198.51.100.2"})).status == 200


async def test_spoofed_forwarded_for_from_untrusted_peer_does_not_buy_a_new_budget(
        make_gateway: Callable[..., Awaitable[TestServer]], http: aiohttp.ClientSession) -> None:
    gateway = await make_gateway(**{"RateLimit__GlobalBurst": "2",
                                    "RateLimit__GlobalPerMinute": "2",
                                    "RateLimit__AuthPerMinute": "1"})
    url = f"{server_url(gateway)}/api/auth/registration-available"
    for index in range(2):
        response = await get(http, url, **{"X-Forwarded-For": f"203.0.113.{index}"})
        assert response.status == 200
    response = await get(http, url, **{"X-Forwarded-For": "203.0.113.99"})
    assert response.status == 429


async def test_login_and_register_have_a_much_stricter_budget(
        make_gateway: Callable[..., Awaitable[TestServer]], browser: Browser) -> None:
    gateway = await make_gateway(**{"RateLimit__AuthBurst": "2",
                                    "RateLimit__AuthPerMinute": "1"})
    client = Browser(browser.session, server_url(gateway))
    assert (await client.register()).status == 201
    assert (await client.login()).status == 200
    refused = await client.login()
    assert refused.status == 429
    assert refused.headers["RateLimit-Limit"] == "2"
    assert int(refused.headers["Retry-After"]) >= 30
    # Everything else still has its (global) budget.
    assert (await client.request("GET", "/api/auth/registration-available")).status == 200


async def test_two_gateways_share_one_budget_through_redis(
        make_gateway: Callable[..., Awaitable[TestServer]], http: aiohttp.ClientSession,
        echo: EchoUpstream) -> None:
    env = {"RateLimit__Backend": "redis", "Redis__Url": SHARED_REDIS,
           "RateLimit__RedisKeyPrefix": prefix(), "RateLimit__GlobalBurst": "4",
           "RateLimit__GlobalPerMinute": "4", "RateLimit__AuthPerMinute": "1"}
    first, second = await make_gateway(**env), await make_gateway(**env)
    path = "/api/auth/registration-available"
    assert (await get(http, server_url(first) + path)).status == 200
    assert (await get(http, server_url(second) + path)).status == 200
    assert (await get(http, server_url(first) + path)).status == 200
    assert (await get(http, server_url(second) + path)).status == 200
    assert (await get(http, server_url(first) + path)).status == 429
    assert (await get(http, server_url(second) + path)).status == 429
    client = redis.Redis.from_url(SHARED_REDIS)
    try:
        keys = client.keys(f"{env['RateLimit__RedisKeyPrefix']}*")
        assert keys
        assert all(client.ttl(key) > 0 for key in keys)
        client.delete(*keys)
    finally:
        client.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class OwnRedis:
    """A redis-server of this test's own, so that stopping it disturbs nobody else."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url)
        for _ in range(100):
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                pass
            time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    if shutil.which("redis-server") is None:
        if CI:
            pytest.fail("redis-server is needed for the fallback test", pytrace=False)
        pytest.skip("redis-server is not installed")
    server = OwnRedis()
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_redis_stopped_mid_test_falls_back_to_memory_then_recovers(
        make_gateway: Callable[..., Awaitable[TestServer]], http: aiohttp.ClientSession,
        own_redis: OwnRedis) -> None:
    gateway = await make_gateway(**{
        "RateLimit__Backend": "redis", "Redis__Url": own_redis.url,
        "RateLimit__RedisKeyPrefix": prefix(), "RateLimit__GlobalBurst": "3",
        "RateLimit__GlobalPerMinute": "3", "RateLimit__AuthPerMinute": "1",
        "RateLimit__RedisRetrySeconds": "0.1", "Redis__TimeoutSeconds": "0.5"})
    app = gateway.app
    assert app is not None
    limiter = app[LIMITER]
    url = f"{server_url(gateway)}/api/auth/registration-available"
    fallbacks_before = metrics.REDIS_FALLBACKS._value.get()
    assert (await get(http, url)).status == 200
    assert not limiter.degraded

    own_redis.stop()
    # Still limited, from memory: never no limit at all.
    statuses = [(await get(http, url)).status for _ in range(4)]
    assert limiter.degraded
    assert metrics.REDIS_FALLBACK._value.get() == 1
    assert metrics.REDIS_FALLBACKS._value.get() == fallbacks_before + 1
    assert statuses[:3] == [200, 200, 200]
    assert statuses[3] == 429

    own_redis.start()
    assert await wait_until(lambda: not limiter.degraded, timeout=5)
    assert metrics.REDIS_FALLBACK._value.get() == 0
    # Back on Redis: the fresh server's empty bucket answers, and it now holds the keys.
    assert (await get(http, url)).status == 200
    client = redis.Redis.from_url(own_redis.url)
    try:
        assert client.keys("tempo-test:*")
    finally:
        client.close()
    await asyncio.sleep(0)
