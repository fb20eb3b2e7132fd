"""Fixtures every test may use: the PostgreSQL server, a clean database per test (copied
from one migrated per run), the service keys and a production environment."""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Iterator

import pytest
import structlog

from tests.support import (
    CI,
    copy_database,
    create_template,
    drop_database,
    run,
    server_answers,
    service_env,
    strong_secret,
    with_database,
)

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
def database_template(postgres_admin_url: str) -> Iterator[str]:
    """The name of a database migrated once for this run, dropped at the end."""
    name = f"tempo_test_{secrets.token_hex(6)}_template"
    run(create_template(postgres_admin_url, name))
    try:
        yield name
    finally:
        run(drop_database(postgres_admin_url, name))


# Databases made for the test, dropped once all its fixtures are gone: fixtures that start
# a service may be set up before ``database_url`` and so torn down after it, and a database
# dropped under a running service would fail that service's shutdown.
_TEST_DATABASES = pytest.StashKey[list[tuple[str, str]]]()


@pytest.fixture
def database_url(request: pytest.FixtureRequest, postgres_admin_url: str,
                 database_template: str) -> str:
    """A database of the test's own, copied from the migrated template: no test sees
    another's rows, and what a service sweeps at start is its own test's."""
    name = f"tempo_test_{secrets.token_hex(6)}"
    run(copy_database(postgres_admin_url, database_template, name))
    request.node.stash.setdefault(_TEST_DATABASES, []).append((postgres_admin_url, name))
    return with_database(postgres_admin_url, name)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    try:
        return (yield)
    finally:
        for admin_url, name in item.stash.get(_TEST_DATABASES, []):
            run(drop_database(admin_url, name))


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
