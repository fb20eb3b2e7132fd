"""The basic path through the real auth app: register, log in, use the cookie."""

from __future__ import annotations

from tests.integration.gateway.gateway_helpers import Browser


async def test_sign_up_and_me_through_gateway(user: Browser) -> None:
    response = await user.request("GET", "/api/auth/me")
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["username"] == "Runner"
