"""Session-wide fixtures: a fresh PostgreSQL database per test run, dropped at the end."""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Iterator

import asyncpg
import pytest
import structlog

from tests.support import CI, run, server_answers, service_env, strong_secret, with_database

DEFAULT_TEST_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Undo any in-process configure_logging.

    It binds handlers to the sys.stdout of the moment, which under pytest is a capture
    stream closed after the test; later tests would log into a closed file and fail.
    """
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    access_level = logging.getLogger("aiohttp.access").level
    config = structlog.get_config()
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(access_level)
    structlog.configure(**config)
    structlog.contextvars.clear_contextvars()


@pytest.fixture(scope="session")
def postgres_admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A superuser URL: TEST_DATABASE_URL, or an embedded server on a laptop without one."""
    url = os.environ.get("TEST_DATABASE_URL", DEFAULT_TEST_DATABASE_URL)
    if run(server_answers(url)):
        yield url
        return
    if CI:
        pytest.fail(f"PostgreSQL does not answer at {url} and CI must not skip it", pytrace=False)
    import pgserver

    server = pgserver.get_server(tmp_path_factory.mktemp("pgdata"), cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def database_url(postgres_admin_url: str) -> Iterator[str]:
    """A randomly named database for this test run, created empty and dropped at the end."""
    name = f"tempo_test_{secrets.token_hex(6)}"

    async def create() -> None:
        connection = await asyncpg.connect(postgres_admin_url)
        try:
            await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()

    async def drop() -> None:
        connection = await asyncpg.connect(postgres_admin_url)
        try:
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await connection.close()

    run(create())
    try:
        yield with_database(postgres_admin_url, name)
    finally:
        run(drop())


@pytest.fixture(scope="session")
def jwt_key() -> str:
    return strong_secret()


@pytest.fixture(scope="session")
def internal_key() -> str:
    return strong_secret()


@pytest.fixture
def base_env(database_url: str, jwt_key: str, internal_key: str) -> dict[str, str]:
    """A complete production environment any service accepts, on the test database."""
    return service_env(database_url, jwt_key=jwt_key, internal_key=internal_key)
