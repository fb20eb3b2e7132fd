"""What the auth integration tests share: a gateway-like client and test constants."""

from __future__ import annotations

from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any

from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from services.auth.settings import AuthSettings
from shared.tokens import Claims, TokenCodec
from tests.support import AUTH_COOKIE, internal_headers

# zxcvbn scores these 4; the tests share them so each one reads as intent, not noise.
GOOD_PASSWORD = "violet-harbor-tangent-42"
OTHER_GOOD_PASSWORD = "copper-meadow-quantum-77"
USERNAME = "Runner"


def cookie_of(response: ClientResponse, name: str = AUTH_COOKIE) -> Any:
    """The cookie as the server set it (the client jar ignores Secure cookies over HTTP)."""
    jar = SimpleCookie()
    for header in response.headers.getall("Set-Cookie", []):
        jar.load(header)
    return jar.get(name)


@dataclass
class AuthApi:
    """Talks to the auth app the way the gateway does: with an internal identity."""

    client: TestClient
    internal_key: str
    user_tokens: TokenCodec

    def headers(self, token: str | None = None, *, client_ip: str = "203.0.113.7",
                user_agent: str = "pytest-browser") -> dict[str, str]:
        user_id = session_id = None
        if token is not None:
            claims = self.user_tokens.verify(token)
            user_id, session_id = claims.subject, claims.token_id
        return internal_headers(self.internal_key, "auth", user_id=user_id,
                                session_id=session_id, client_ip=client_ip,
                                user_agent=user_agent)

    def claims(self, token: str) -> Claims:
        return self.user_tokens.verify(token)

    async def request(self, method: str, path: str, token: str | None = None,
                      **kwargs: Any) -> ClientResponse:
        headers = {**self.headers(token), **kwargs.pop("headers", {})}
        return await self.client.request(method, path, headers=headers, **kwargs)

    async def register(self, username: str = USERNAME,
                       password: str = GOOD_PASSWORD) -> ClientResponse:
        return await self.request("POST", "/auth/register",
                                  json={"username": username, "password": password})

    async def login(self, username: str = USERNAME, password: str = GOOD_PASSWORD,
                    **kwargs: Any) -> ClientResponse:
        return await self.request("POST", "/auth/login",
                                  json={"username": username, "password": password}, **kwargs)

    async def login_token(self, username: str = USERNAME,
                          password: str = GOOD_PASSWORD) -> str:
        response = await self.login(username, password)
        assert response.status == 200, await response.text()
        return cookie_of(response).value

    async def registered_token(self) -> str:
        response = await self.register()
        assert response.status == 201, await response.text()
        return await self.login_token()


def user_codec(settings: AuthSettings) -> TokenCodec:
    jwt = settings.jwt
    return TokenCodec(jwt.keys, issuer=jwt.issuer, audience=jwt.audience,
                      lifetime_seconds=settings.token_lifetime_seconds)
