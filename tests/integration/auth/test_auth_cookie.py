"""The sign-in cookie: ``__Host-authToken`` with HttpOnly, Secure, SameSite=Lax, Path=/, no
Domain and Max-Age = token lifetime; ``authToken`` without Secure in plain-HTTP development."""

from __future__ import annotations

import asyncpg

from services.auth.app import create_app
from services.auth.settings import load_settings
from tests.integration.auth.auth_helpers import (
    GOOD_PASSWORD,
    OTHER_GOOD_PASSWORD,
    AuthApi,
    cookie_of,
    user_codec,
)
from tests.support import AUTH_COOKIE, DEV_AUTH_COOKIE

SEVEN_DAYS = 7 * 24 * 3600


def raw_set_cookie(response, name: str = AUTH_COOKIE) -> str:
    headers = [h for h in response.headers.getall("Set-Cookie", []) if h.startswith(f"{name}=")]
    assert len(headers) == 1, response.headers.getall("Set-Cookie", [])
    return headers[0]


def attributes(header: str) -> dict[str, str]:
    result = {}
    for part in header.split(";")[1:]:
        name, _, value = part.strip().partition("=")
        result[name.lower()] = value
    return result


async def test_login_cookie_is_httponly_secure_samesite(api: AuthApi) -> None:
    await api.register()
    response = await api.login()
    header = raw_set_cookie(response)
    attrs = attributes(header)
    assert "httponly" in attrs
    assert "secure" in attrs
    assert attrs["samesite"] == "Lax"
    assert attrs["path"] == "/"
    assert attrs["max-age"] == str(SEVEN_DAYS)
    claims = api.claims(cookie_of(response).value)
    assert claims.expires_at - claims.issued_at == SEVEN_DAYS


async def test_production_login_sets_a_host_prefixed_cookie_without_domain(
        api: AuthApi) -> None:
    await api.register()
    response = await api.login()
    headers = response.headers.getall("Set-Cookie")
    # One cookie, by the prefixed name only, never the bare one a sibling host could set.
    assert len(headers) == 1, headers
    header = headers[0]
    assert header.startswith("__Host-authToken=")
    attrs = attributes(header)
    assert "secure" in attrs
    assert attrs["path"] == "/"
    assert "domain" not in attrs


async def test_cookie_lifetime_follows_jwt_expiration_days(aiohttp_client,
                                                          base_env: dict[str, str],
                                                          internal_key: str,
                                                          db: asyncpg.Connection) -> None:
    settings = load_settings({**base_env, "Auth__BcryptCost": "10",
                              "JWT__ExpirationDays": "2"})
    api = AuthApi(await aiohttp_client(create_app(settings)), internal_key,
                  user_codec(settings))
    await api.register()
    response = await api.login()
    assert attributes(raw_set_cookie(response))["max-age"] == str(2 * 24 * 3600)
    claims = api.claims(cookie_of(response).value)
    assert claims.expires_at - claims.issued_at == 2 * 24 * 3600


async def test_password_change_cookie_has_the_same_attributes(api: AuthApi) -> None:
    token = await api.registered_token()
    response = await api.request("POST", "/auth/password", token, json={
        "currentPassword": GOOD_PASSWORD, "newPassword": OTHER_GOOD_PASSWORD})
    attrs = attributes(raw_set_cookie(response))
    assert {"httponly", "secure"} <= attrs.keys()
    assert attrs["samesite"] == "Lax"
    assert attrs["path"] == "/"
    assert attrs["max-age"] == str(SEVEN_DAYS)


async def test_logout_cookie_expires_the_token_with_the_same_scope(api: AuthApi) -> None:
    token = await api.registered_token()
    response = await api.request("POST", "/auth/logout", token)
    header = raw_set_cookie(response)
    attrs = attributes(header)
    assert header.startswith((f'{AUTH_COOKIE}="";', f"{AUTH_COOKIE}=;"))
    assert attrs["max-age"] == "0"
    assert attrs["path"] == "/"
    assert {"httponly", "secure"} <= attrs.keys()


async def test_development_may_turn_secure_off(aiohttp_client, base_env: dict[str, str],
                                               internal_key: str,
                                               db: asyncpg.Connection) -> None:
    settings = load_settings({**base_env, "Auth__BcryptCost": "10",
                              "App__Environment": "development",
                              "Auth__CookieSecure": "false"})
    api = AuthApi(await aiohttp_client(create_app(settings)), internal_key,
                  user_codec(settings))
    await api.register()
    response = await api.login()
    attrs = attributes(raw_set_cookie(response, DEV_AUTH_COOKIE))
    # Browsers refuse a __Host- cookie without Secure: the bare name, and only it.
    assert not [h for h in response.headers.getall("Set-Cookie") if h.startswith("__Host-")]
    assert cookie_of(response, DEV_AUTH_COOKIE) is not None
    logout = await api.request("POST", "/auth/logout", cookie_of(response, DEV_AUTH_COOKIE).value)
    assert attributes(raw_set_cookie(logout, DEV_AUTH_COOKIE))["max-age"] == "0"
    assert "secure" not in attrs
    assert "httponly" in attrs
    assert attrs["samesite"] == "Lax"


async def test_development_keeps_secure_unless_told(aiohttp_client, base_env: dict[str, str],
                                                    internal_key: str,
                                                    db: asyncpg.Connection) -> None:
    settings = load_settings({**base_env, "Auth__BcryptCost": "10",
                              "App__Environment": "development"})
    api = AuthApi(await aiohttp_client(create_app(settings)), internal_key,
                  user_codec(settings))
    await api.register()
    assert "secure" in attributes(raw_set_cookie(await api.login()))


async def test_failed_login_sets_no_cookie(api: AuthApi) -> None:
    await api.register()
    response = await api.login(password="not-the-password-1")
    assert response.status == 401
    assert "Set-Cookie" not in response.headers
