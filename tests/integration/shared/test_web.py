"""The shared middleware: request ids, problem+json errors, JSON bodies, internal identity."""

from __future__ import annotations

import time

import pytest
from aiohttp import web

from shared.config import Env, KeySet, Secret, load_common
from shared.errors import NotFoundError, RateLimitedError
from shared.identity import (
    INTERNAL_TOKEN_HEADER,
    identity_of,
    internal_codec,
    internal_identity_middleware,
    mint_internal_token,
)
from shared.keys import COMMON_SETTINGS
from shared.web import (
    error_middleware,
    health,
    read_json,
    request_id_middleware,
    require_str,
    trust_always,
)
from tests.support import internal_headers, service_env, strong_secret

SECRET_TEXT = "the-exception-text-that-must-not-leak"


def make_app(internal_key: str, database_url: str, environment: str = "production"
             ) -> web.Application:
    env = Env(service_env(database_url, jwt_key=strong_secret(), internal_key=internal_key,
                          App__Environment=environment))
    settings = load_common(env, "media", 0)
    assert env.problems == []
    app = web.Application(middlewares=[
        request_id_middleware(trust_always),
        error_middleware,
        internal_identity_middleware(KeySet(Secret(internal_key)), "media"),
    ])
    app[COMMON_SETTINGS] = settings

    async def boom(_request: web.Request) -> web.Response:
        raise RuntimeError(SECRET_TEXT)

    async def missing(_request: web.Request) -> web.Response:
        raise NotFoundError("No such thing.")

    async def limited(_request: web.Request) -> web.Response:
        raise RateLimitedError(7)

    async def echo(request: web.Request) -> web.Response:
        body = await read_json(request)
        return web.json_response({"name": require_str(body, "name"),
                                  "user": identity_of(request).user_id})

    app.router.add_get("/health", health)
    app.router.add_get("/boom", boom)
    app.router.add_get("/missing", missing)
    app.router.add_get("/limited", limited)
    app.router.add_post("/echo", echo)
    return app


@pytest.fixture
async def client(aiohttp_client, internal_key: str, database_url: str):
    return await aiohttp_client(make_app(internal_key, database_url))


@pytest.fixture
def auth(internal_key: str) -> dict[str, str]:
    return internal_headers(internal_key, "media", user_id="user-1")


async def test_unexpected_error_is_generic_500_without_exception_text(client, auth) -> None:
    response = await client.get("/boom", headers=auth)
    assert response.status == 500
    assert response.content_type == "application/problem+json"
    text = await response.text()
    assert SECRET_TEXT not in text
    body = await response.json(content_type=None)
    assert body["code"] == "internal_error"
    assert body["requestId"] == response.headers["X-Request-ID"]


async def test_development_mode_adds_the_traceback(aiohttp_client, internal_key, database_url,
                                                   auth) -> None:
    client = await aiohttp_client(make_app(internal_key, database_url, "development"))
    response = await client.get("/boom", headers=auth)
    body = await response.json(content_type=None)
    assert SECRET_TEXT in body["traceback"]


async def test_service_error_is_problem_json_with_code(client, auth) -> None:
    response = await client.get("/missing", headers=auth)
    assert response.status == 404
    body = await response.json(content_type=None)
    assert body["code"] == "not_found"
    assert body["error"] == body["detail"] == "No such thing."
    assert body["status"] == 404


async def test_rate_limited_error_carries_retry_after(client, auth) -> None:
    response = await client.get("/limited", headers=auth)
    assert response.status == 429
    assert response.headers["Retry-After"] == "7"


async def test_unknown_route_is_problem_json(client, auth) -> None:
    response = await client.get("/nowhere", headers=auth)
    assert response.status == 404
    assert response.content_type == "application/problem+json"


async def test_request_id_is_kept_when_well_formed_and_replaced_otherwise(client, auth) -> None:
    response = await client.get("/missing", headers={**auth, "X-Request-ID": "abcdef123456"})
    assert response.headers["X-Request-ID"] == "abcdef123456"
    response = await client.get("/missing", headers={**auth, "X-Request-ID": "bad id <script>"})
    assert response.headers["X-Request-ID"] != "bad id <script>"
    assert len(response.headers["X-Request-ID"]) == 32


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"data": b'{"name": "x"}', "headers": {"Content-Type": "text/plain"}}, 415,
         "unsupported_media_type"),
        ({"data": b"{not json", "headers": {"Content-Type": "application/json"}}, 400,
         "malformed_json"),
        ({"data": b"[1, 2]", "headers": {"Content-Type": "application/json"}}, 400,
         "malformed_json"),
        ({"json": {}}, 400, "missing_field"),
        ({"json": {"name": 5}}, 400, "invalid_field"),
        ({"data": b'{"name": "' + b"x" * 70_000 + b'"}',
          "headers": {"Content-Type": "application/json"}}, 413, "payload_too_large"),
    ],
)
async def test_bad_json_bodies_are_clear_4xx(client, auth, kwargs, status, code) -> None:
    headers = {**auth, **kwargs.pop("headers", {})}
    response = await client.post("/echo", headers=headers, **kwargs)
    assert response.status == status
    body = await response.json(content_type=None)
    assert body["code"] == code


async def test_good_json_body_and_identity_reach_the_handler(client, auth) -> None:
    response = await client.post("/echo", json={"name": "x"}, headers=auth)
    assert response.status == 200
    assert await response.json() == {"name": "x", "user": "user-1"}


async def test_health_needs_no_internal_token(client) -> None:
    response = await client.get("/health")
    assert response.status == 200


async def test_internal_identity_refuses_missing_token(client) -> None:
    response = await client.post("/echo", json={"name": "x"})
    assert response.status == 401


async def test_internal_identity_refuses_wrong_audience(client, internal_key) -> None:
    response = await client.post("/echo", json={"name": "x"},
                                 headers=internal_headers(internal_key, "auth", user_id="u"))
    assert response.status == 401


async def test_internal_identity_refuses_wrong_key(client) -> None:
    response = await client.post("/echo", json={"name": "x"},
                                 headers=internal_headers(strong_secret(), "media", user_id="u"))
    assert response.status == 401


async def test_internal_identity_refuses_expired_token(client, internal_key) -> None:
    codec = internal_codec(KeySet(Secret(internal_key)), "media")
    token = mint_internal_token(codec, audience="media", user_id="u", session_id=None,
                                client_ip=None, user_agent=None, now=time.time() - 120)
    response = await client.post("/echo", json={"name": "x"},
                                 headers={INTERNAL_TOKEN_HEADER: token})
    assert response.status == 401
