"""Which routes need the cookie, and which cookies are refused (every forged shape)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import jwt
import pytest
from aiohttp.test_utils import TestServer

from services.gateway.routes import API_ROUTES
from shared.config import KeySet, Secret
from shared.tokens import TokenCodec, key_id
from tests.integration.gateway.gateway_helpers import (
    Browser,
    EchoUpstream,
    identity_claims,
    server_url,
)
from tests.support import AUTH_COOKIE, DEV_AUTH_COOKIE

SAMPLE_ID = "4a0b7c1e-1d2f-4a5b-9c8d-7e6f5a4b3c2d"
PROTECTED = [(api.method, api.path.replace("{id}", SAMPLE_ID))
             for api in API_ROUTES if not api.public]


def codec(key: str, **kwargs: Any) -> TokenCodec:
    options = {"issuer": "Tempo", "audience": "Tempo", "lifetime_seconds": 3600, **kwargs}
    return TokenCodec(KeySet(Secret(key)), **options)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made(header: dict[str, Any], payload: dict[str, Any], key: str,
              digest: Any = hashlib.sha256) -> str:
    """A token signed with an HMAC whatever its header claims."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    signature = hmac.new(key.encode(), signing_input.encode(), digest).digest()
    return f"{signing_input}.{b64(signature)}"


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    payload = {"iss": "Tempo", "aud": "Tempo", "sub": SAMPLE_ID, "jti": "forged-jti",
               "iat": now, "exp": now + 3600}
    payload.update(overrides)
    return {k: v for k, v in payload.items() if v is not None}


async def test_public_routes_answer_without_a_cookie(browser: Browser) -> None:
    response = await browser.request("GET", "/api/auth/registration-available")
    assert response.status == 200
    assert (await response.json()) == {"registrationAvailable": True,
                                       "setupCodeRequired": False}
    assert (await browser.register()).status == 201
    assert (await browser.login()).status == 200
    for path in ("/health", "/openapi.json", "/"):
        assert (await browser.request("GET", path)).status == 200, path


@pytest.mark.parametrize(("method", "path"), PROTECTED)
async def test_protected_route_without_cookie_is_401_and_never_reaches_upstream(
        browser: Browser, echo: EchoUpstream, method: str, path: str) -> None:
    response = await browser.request(method, path)
    assert response.status == 401
    assert response.content_type == "application/problem+json"
    body = await response.json()
    assert body["code"] == "unauthorized"
    assert body["requestId"] == response.headers["X-Request-ID"]
    assert echo.received == []


@pytest.mark.parametrize(("method", "path"), [(m, p) for m, p in PROTECTED
                                              if p.startswith(("/api/media", "/api/imports",
                                                               "/api/export"))])
async def test_protected_media_route_with_cookie_reaches_media_as_the_user(
        user: Browser, echo: EchoUpstream, internal_key: str, method: str, path: str) -> None:
    response = await user.request(method, path)
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["path"] == path.removeprefix("/api")
    identity = identity_claims(internal_key, "media", body["identity"])
    token_claims = jwt.decode(user.token, options={"verify_signature": False})
    assert identity.subject == token_claims["sub"]
    assert identity.extra["sid"] == token_claims["jti"]
    assert identity.extra["ua"] == "pytest-browser/1.0"


async def test_protected_auth_routes_with_cookie_reach_auth(user: Browser) -> None:
    me = await user.request("GET", "/api/auth/me")
    assert me.status == 200
    sessions = await user.request("GET", "/api/auth/sessions")
    assert sessions.status == 200


async def test_public_route_with_a_cookie_goes_upstream_anonymous(
        make_gateway: Callable[..., Awaitable[TestServer]], browser: Browser,
        echo: EchoUpstream, echo_server: TestServer, jwt_key: str, internal_key: str) -> None:
    # The echo upstream stands in for auth here, to show what auth would hear.
    gateway = await make_gateway(**{"Upstreams__Auth": server_url(echo_server)})
    client = Browser(browser.session, server_url(gateway),
                     token=codec(jwt_key).issue(SAMPLE_ID)[0])
    response = await client.request("GET", "/api/auth/registration-available")
    assert response.status == 200
    identity = identity_claims(internal_key, "auth", (await response.json())["identity"])
    assert identity.subject == "anonymous"
    assert identity.extra.get("sid") is None
    assert echo.received[-1].path == "/auth/registration-available"


def forged_tokens(jwt_key: str) -> dict[str, str]:
    right_kid = key_id(jwt_key)
    other_key = "another-key-that-is-long-enough-0123456789abcdef"
    now = int(time.time())
    return {
        "alg_none": jwt.encode(claims(), None, algorithm="none", headers={"kid": right_kid}),
        "alg_none_unsigned_suffix": hand_made({"alg": "none", "kid": right_kid}, claims(),
                                              jwt_key).rsplit(".", 1)[0] + ".",
        # The RS256/HS256 confusion: a token that says RS256 but is an HMAC over the key.
        "alg_rs256_hmac_signed": hand_made({"alg": "RS256", "typ": "JWT", "kid": right_kid},
                                           claims(), jwt_key),
        "alg_hs512": hand_made({"alg": "HS512", "kid": right_kid}, claims(), jwt_key,
                               digest=hashlib.sha512),
        "wrong_key": codec(other_key).issue(SAMPLE_ID)[0],
        "wrong_key_claiming_right_kid": hand_made({"alg": "HS256", "kid": right_kid},
                                                  claims(), other_key),
        "no_kid": jwt.encode(claims(), jwt_key, algorithm="HS256"),
        "wrong_issuer": codec(jwt_key, issuer="Evil").issue(SAMPLE_ID)[0],
        "wrong_audience": codec(jwt_key, audience="media").issue(SAMPLE_ID)[0],
        "expired": codec(jwt_key).issue(SAMPLE_ID, now=now - 7200)[0],
        "issued_in_the_future": codec(jwt_key).issue(SAMPLE_ID, now=now + 3600)[0],
        "not_yet_valid_nbf": codec(jwt_key).issue(SAMPLE_ID, extra={"nbf": now + 3600})[0],
        "missing_jti": hand_made({"alg": "HS256", "kid": right_kid}, claims(jti=None), jwt_key),
        "missing_sub": hand_made({"alg": "HS256", "kid": right_kid}, claims(sub=None), jwt_key),
        "missing_exp": hand_made({"alg": "HS256", "kid": right_kid}, claims(exp=None), jwt_key),
        "missing_iat": hand_made({"alg": "HS256", "kid": right_kid}, claims(iat=None), jwt_key),
        "non_string_sub": hand_made({"alg": "HS256", "kid": right_kid}, claims(sub=42),
                                    jwt_key),
        "garbage": "garbage",
        "three_garbage_parts": "a.b.c",
        "tampered_payload": (lambda t: t.split(".")[0] + "." + b64(json.dumps(
            claims(sub="00000000-0000-0000-0000-000000000000")).encode()) + "."
            + t.split(".")[2])(codec(jwt_key).issue(SAMPLE_ID)[0]),
        "long_4k_token": "e" * 5000,
    }


@pytest.mark.parametrize("shape", sorted(forged_tokens("x" * 40)))
async def test_forged_or_invalid_token_is_refused_with_401(
        browser: Browser, echo: EchoUpstream, jwt_key: str, shape: str) -> None:
    browser.token = forged_tokens(jwt_key)[shape]
    for method, path in (("GET", "/api/auth/me"), ("GET", "/api/media")):
        response = await browser.request(method, path)
        assert response.status == 401, (shape, path)
        assert (await response.json())["code"] == "unauthorized"
    assert echo.received == []


async def test_valid_token_for_a_user_is_accepted_as_the_control(
        browser: Browser, echo: EchoUpstream, jwt_key: str) -> None:
    # The forged shapes above differ from this one only in what makes them invalid.
    browser.token = codec(jwt_key).issue(SAMPLE_ID)[0]
    response = await browser.request("GET", "/api/media")
    assert response.status == 200


async def test_a_100_kb_cookie_is_refused_without_reaching_upstream(
        browser: Browser, echo: EchoUpstream) -> None:
    browser.token = "A" * 100_000
    response = await browser.request("GET", "/api/media")
    # The HTTP parser refuses a header this size before the application sees it.
    assert response.status in {400, 401, 431}
    assert "Traceback" not in await response.text()
    assert echo.received == []


def cookies(*pairs: tuple[str, str]) -> dict[str, str]:
    return {"Cookie": "; ".join(f"{name}={value}" for name, value in pairs)}


async def test_a_planted_unprefixed_cookie_is_ignored_in_production(
        browser: Browser, echo: EchoUpstream, jwt_key: str) -> None:
    # Even a token the gateway would accept: a sibling subdomain can set `authToken` for
    # the parent domain, so in production that name means nothing.
    valid = codec(jwt_key).issue(SAMPLE_ID)[0]
    response = await browser.request("GET", "/api/media",
                                     headers=cookies((DEV_AUTH_COOKIE, valid)))
    assert response.status == 401
    assert echo.received == []


async def test_an_empty_and_a_forged_cookie_before_a_valid_one_still_authenticate(
        browser: Browser, echo: EchoUpstream, jwt_key: str) -> None:
    valid = codec(jwt_key).issue(SAMPLE_ID)[0]
    forged = forged_tokens(jwt_key)["wrong_key_claiming_right_kid"]
    response = await browser.request("GET", "/api/media", headers=cookies(
        (AUTH_COOKIE, ""), (AUTH_COOKIE, forged), (DEV_AUTH_COOKIE, "planted"),
        (AUTH_COOKIE, valid)))
    assert response.status == 200, await response.text()
    assert len(echo.received) == 1


async def test_a_revoked_cookie_before_a_valid_one_still_authenticates(
        user: Browser) -> None:
    stale = user.token
    assert (await user.request("POST", "/api/auth/logout")).status == 200
    user.token = None
    assert (await user.login()).status == 200
    fresh = user.token
    user.token = None
    response = await user.request("GET", "/api/auth/me",
                                  headers=cookies((AUTH_COOKIE, stale), (AUTH_COOKIE, fresh)))
    assert response.status == 200, await response.text()
    alone = await user.request("GET", "/api/auth/me", headers=cookies((AUTH_COOKIE, stale)))
    assert alone.status == 401


async def test_only_the_first_four_cookies_by_the_name_are_tried(
        browser: Browser, echo: EchoUpstream, jwt_key: str) -> None:
    valid = codec(jwt_key).issue(SAMPLE_ID)[0]
    forged = forged_tokens(jwt_key)["wrong_key"]
    response = await browser.request("GET", "/api/media", headers=cookies(
        *[(AUTH_COOKIE, forged)] * 4, (AUTH_COOKIE, valid)))
    assert response.status == 401
    assert echo.received == []


async def test_a_plain_http_gateway_reads_the_unprefixed_cookie(
        make_gateway: Callable[..., Awaitable[TestServer]], browser: Browser,
        jwt_key: str) -> None:
    gateway = await make_gateway(App__Environment="development",
                                 Auth__CookieSecure="false")
    client = Browser(browser.session, server_url(gateway))
    valid = codec(jwt_key).issue(SAMPLE_ID)[0]
    bare = await client.request("GET", "/api/media", headers=cookies((DEV_AUTH_COOKIE, valid)))
    assert bare.status == 200, await bare.text()
    prefixed = await client.request("GET", "/api/media", headers=cookies((AUTH_COOKIE, valid)))
    assert prefixed.status == 401


async def test_logout_through_the_gateway_clears_the_prefixed_cookie(user: Browser) -> None:
    response = await user.request("POST", "/api/auth/logout")
    assert response.status == 200
    cleared = [header for header in response.headers.getall("Set-Cookie")
               if header.startswith(f"{AUTH_COOKIE}=")]
    assert len(cleared) == 1, response.headers.getall("Set-Cookie")
    assert "max-age=0" in cleared[0].lower()
    assert "path=/" in cleared[0].lower()
