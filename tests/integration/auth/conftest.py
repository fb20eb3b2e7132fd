"""Fixtures for the auth service: the real app on the test's own database."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from services.auth.app import create_app
from services.auth.settings import AuthSettings, load_settings
from tests.integration.auth.auth_helpers import AuthApi, user_codec


@pytest.fixture
def auth_env(base_env: dict[str, str]) -> dict[str, str]:
    return {**base_env, "Auth__BcryptCost": "10", "Auth__HashQueueSize": "256"}


@pytest.fixture
def auth_settings(auth_env: dict[str, str]) -> AuthSettings:
    return load_settings(auth_env)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection for looking behind the API, on the test's own database."""
    connection = await asyncpg.connect(database_url)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def api(aiohttp_client, auth_settings: AuthSettings, internal_key: str,
              db: asyncpg.Connection) -> AuthApi:
    client = await aiohttp_client(create_app(auth_settings))
    return AuthApi(client, internal_key, user_codec(auth_settings))
