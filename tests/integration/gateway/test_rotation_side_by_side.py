"""Key rotation with services on old and new key sets running side by side.

During a rotation the key files change and services restart one at a time, so for a while
some processes hold the old key set and others the new one (new key current, old key
previous). These tests run real auth apps and gateways with both sets at once, on the
same database, and check that they agree in the order deploy/rotate.py restarts them.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import jwt as pyjwt
import pytest
from aiohttp.test_utils import TestServer

from services.auth.app import create_app as create_auth_app
from services.auth.settings import load_settings as load_auth_settings
from shared.tokens import key_id
from tests.integration.gateway.gateway_helpers import (
    Browser,
    gateway_env,
    server_url,
    start_gateway,
)
from tests.support import strong_secret

UNUSED_MEDIA = "http://127.0.0.1:9"


def key_env(jwt: str, internal: str, *, jwt_previous: str = "",
            internal_previous: str = "") -> dict[str, str]:
    env = {"JWT__SecretKey": jwt, "Internal__SecretKey": internal}
    if jwt_previous:
        env["JWT__PreviousSecretKeys"] = jwt_previous
    if internal_previous:
        env["Internal__PreviousSecretKeys"] = internal_previous
    return env


@pytest.fixture
async def start_auth(aiohttp_server: Any, base_env: dict[str, str]):

    async def start(keys: dict[str, str]) -> TestServer:
        env = {**base_env, "Auth__BcryptCost": "10", **keys}
        return await aiohttp_server(create_auth_app(load_auth_settings(env)))

    return start


@pytest.fixture
def start_gw(aiohttp_server: Any, base_env: dict[str, str]):
    async def start(auth: TestServer, keys: dict[str, str]) -> TestServer:
        env = gateway_env({**base_env, **keys}, auth_url=server_url(auth),
                          media_url=UNUSED_MEDIA)
        return await start_gateway(aiohttp_server, env)

    return start


@pytest.fixture
async def http():
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield session


async def me(http: aiohttp.ClientSession, gateway: TestServer, token: str) -> int:
    response = await Browser(http, server_url(gateway), token).request("GET", "/api/auth/me")
    return response.status


async def test_user_tokens_agree_across_old_and_new_jwt_key_sets(start_auth, start_gw,
                                                                 http) -> None:
    old, new, internal = strong_secret(), strong_secret(), strong_secret()
    old_keys = key_env(old, internal)
    new_keys = key_env(new, internal, jwt_previous=old)
    auth_old = await start_auth(old_keys)
    auth_new = await start_auth(new_keys)
    gateway_old_to_old = await start_gw(auth_old, old_keys)
    gateway_new_to_old = await start_gw(auth_old, new_keys)
    gateway_new_to_new = await start_gw(auth_new, new_keys)

    signer = Browser(http, server_url(gateway_old_to_old))
    old_token = await signer.sign_up()
    # A token from before the rotation is good at every gateway, old or new.
    for gateway in (gateway_old_to_old, gateway_new_to_old, gateway_new_to_new):
        assert await me(http, gateway, old_token) == 200

    # The restarted auth signs with the new key: the restarted gateways accept it...
    fresh = Browser(http, server_url(gateway_new_to_new))
    assert (await fresh.login()).status == 200
    assert fresh.token is not None
    assert fresh.token != old_token
    assert await me(http, gateway_new_to_new, fresh.token) == 200
    assert await me(http, gateway_new_to_old, fresh.token) == 200
    # ...and one still on the old set does not, which is why gateways restart first.
    assert await me(http, gateway_old_to_old, fresh.token) == 401


async def test_internal_tokens_agree_across_old_and_new_internal_key_sets(
        start_auth, start_gw, http) -> None:
    jwt, old, new = strong_secret(), strong_secret(), strong_secret()
    old_keys = key_env(jwt, old)
    new_keys = key_env(jwt, new, internal_previous=old)
    auth_old = await start_auth(old_keys)
    auth_new = await start_auth(new_keys)
    gateway_old_to_new = await start_gw(auth_new, old_keys)
    gateway_new_to_new = await start_gw(auth_new, new_keys)
    gateway_new_to_old = await start_gw(auth_old, new_keys)

    token = await Browser(http, server_url(gateway_old_to_new)).sign_up()
    # A restarted auth verifies identities minted with the old key and the new one.
    assert await me(http, gateway_old_to_new, token) == 200
    assert await me(http, gateway_new_to_new, token) == 200
    # An auth still on the old set refuses the new key, which is why upstreams go first.
    assert await me(http, gateway_new_to_old, token) == 401


async def test_a_cookie_with_a_forged_kid_is_refused_during_a_rotation(start_auth, start_gw,
                                                                       http) -> None:
    old, new, internal = strong_secret(), strong_secret(), strong_secret()
    keys = key_env(new, internal, jwt_previous=old)
    gateway = await start_gw(await start_auth(keys), keys)
    genuine = await Browser(http, server_url(gateway)).sign_up()
    claims = pyjwt.decode(genuine, options={"verify_signature": False})
    for kid in (key_id(old), key_id(new), "0" * 16):
        forged = pyjwt.encode(claims, strong_secret(), algorithm="HS256",
                              headers={"kid": kid})
        assert await me(http, gateway, forged) == 401
    assert await me(http, gateway, genuine) == 200
