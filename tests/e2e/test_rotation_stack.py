"""Rotating the secrets of a running stack: JWT and internal keys, database passwords.

A real stack (three processes, their own randomly named roles and database) is rotated
with the functions ``python -m deploy.rotate`` runs, restarting services through the
stack runner. A signed-in user stays signed in throughout; the old key stops working only
when it is dropped; every step leaves one audit record and no secret in it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import AsyncIterator
from http.cookies import SimpleCookie
from pathlib import Path

import aiohttp
import asyncpg
import jwt as pyjwt
import pytest

from deploy import rotate
from deploy.stack import Stack, free_port
from tests.e2e.conftest import TEST_ENV
from tests.support import AUTH_COOKIE, with_database

pytestmark = pytest.mark.timeout(300)

USERNAME = "Rotator"
PASSWORD = "violet-harbor-tangent-42"


@pytest.fixture
async def stack(tmp_path: Path, postgres_admin_url: str) -> AsyncIterator[Stack]:
    suffix = secrets.token_hex(4)
    running = Stack(tmp_path, admin_url=postgres_admin_url,
                    database=f"tempo_rot_{suffix}", role_prefix=f"tempo_rot_{suffix}",
                    ports={name: free_port() for name in ("auth", "media", "gateway")},
                    env=TEST_ENV, drop_database_on_exit=True)
    async with running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield session


async def call(http: aiohttp.ClientSession, stack: Stack, method: str, path: str,
               token: str | None = None, body: dict | None = None) -> aiohttp.ClientResponse:
    headers = {"Origin": stack.url}
    if token:
        headers["Cookie"] = f"{AUTH_COOKIE}={token}"
    response = await http.request(method, f"{stack.url}{path}", json=body, headers=headers)
    await response.read()
    return response


async def login(http: aiohttp.ClientSession, stack: Stack) -> str:
    response = await call(http, stack, "POST", "/api/auth/login",
                          body={"username": USERNAME, "password": PASSWORD})
    assert response.status == 200, await response.text()
    jar: SimpleCookie = SimpleCookie()
    for header in response.headers.getall("Set-Cookie"):
        jar.load(header)
    return jar[AUTH_COOKIE].value


async def signed_in(http: aiohttp.ClientSession, stack: Stack, token: str) -> int:
    return (await call(http, stack, "GET", "/api/auth/me", token)).status


def admin_in(stack: Stack) -> str:
    assert stack.admin_url is not None
    return with_database(stack.admin_url, stack.database)


def scram_matches(verifier: str, password: str) -> bool:
    """Whether a SCRAM-SHA-256 verifier from pg_authid was made from ``password``."""
    method, _, rest = verifier.partition("$")
    iterations, _, rest = rest.partition(":")
    salt, _, rest = rest.partition("$")
    stored_key, _, _ = rest.partition(":")
    assert method == "SCRAM-SHA-256"
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt),
                                 int(iterations))
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    return hmac.compare_digest(hashlib.sha256(client_key).digest(),
                               base64.b64decode(stored_key))


async def rotation_records(stack: Stack) -> list[dict]:
    connection = await asyncpg.connect(admin_in(stack))
    try:
        rows = await connection.fetch(
            "SELECT event, outcome, actor, user_id, detail::text AS detail FROM"
            " auth.auth_events WHERE event = 'secrets_rotate' ORDER BY id")
    finally:
        await connection.close()
    return [dict(row) for row in rows]


async def test_jwt_rotation_keeps_users_signed_in_until_the_old_key_is_dropped(
        stack: Stack, http: aiohttp.ClientSession) -> None:
    response = await call(http, stack, "POST", "/api/auth/register",
                          body={"username": USERNAME, "password": PASSWORD})
    assert response.status == 201
    old_token = await login(http, stack)
    old_key = (stack.secrets_dir / "jwt_key").read_text()
    deployment = rotate.stack_deployment(stack)

    await rotate.rotate_key(stack.secrets_dir, "jwt", deployment)

    new_key = (stack.secrets_dir / "jwt_key").read_text()
    assert new_key != old_key
    assert (stack.secrets_dir / "jwt_previous_keys").read_text().split() == [old_key]
    assert await signed_in(http, stack, old_token) == 200
    new_token = await login(http, stack)
    assert pyjwt.get_unverified_header(new_token)["kid"] != \
        pyjwt.get_unverified_header(old_token)["kid"]
    assert await signed_in(http, stack, new_token) == 200

    with pytest.raises(rotate.RotationError, match="may still be valid"):
        await rotate.drop_previous(stack.secrets_dir, "jwt", deployment,
                                   max_token_seconds=7 * 86400)
    assert await signed_in(http, stack, old_token) == 200

    await rotate.drop_previous(stack.secrets_dir, "jwt", deployment,
                               max_token_seconds=7 * 86400, force=True)
    assert await signed_in(http, stack, old_token) == 401
    assert await signed_in(http, stack, new_token) == 200

    # The internal key: every request of the signed-in user crosses it, before and after.
    await rotate.rotate_key(stack.secrets_dir, "internal", deployment)
    assert await signed_in(http, stack, new_token) == 200
    assert (await call(http, stack, "GET", "/api/media", new_token)).status == 200
    await rotate.drop_previous(stack.secrets_dir, "internal", deployment,
                               max_token_seconds=60, now=10**12)
    assert await signed_in(http, stack, new_token) == 200

    records = await rotation_records(stack)
    assert [json.loads(record["detail"]) for record in records] == [
        {"secret": "jwt", "step": "rotate"},
        {"secret": "jwt", "step": "drop_previous", "forced": True},
        {"secret": "internal", "step": "rotate"},
        {"secret": "internal", "step": "drop_previous", "forced": False},
    ]
    assert all((r["outcome"], r["actor"], r["user_id"]) == ("success", "admin", None)
               for r in records)
    # The refused early drop changed nothing, so it left nothing to record.
    everything = json.dumps(records)
    for secret in (old_key, new_key, (stack.secrets_dir / "internal_key").read_text()):
        assert secret not in everything


async def test_database_password_rotation_leaves_every_service_connected(
        stack: Stack, http: aiohttp.ClientSession) -> None:
    old = {name: (stack.secrets_dir / f"db_{name}_password").read_text()
           for name in ("auth", "media", "gateway")}

    await rotate.rotate_database_passwords(stack.secrets_dir, rotate.stack_deployment(stack))

    connection = await asyncpg.connect(admin_in(stack))
    try:
        for name, old_password in old.items():
            new_password = (stack.secrets_dir / f"db_{name}_password").read_text()
            assert new_password != old_password
            verifier = await connection.fetchval(
                "SELECT rolpassword FROM pg_authid WHERE rolname = $1", stack.role_names[name])
            assert scram_matches(verifier, new_password)
            assert not scram_matches(verifier, old_password)
    finally:
        await connection.close()
    # Each restarted service reached the database as its role: gateway's readiness needs
    # its revocation listener; register and list need auth and media.
    async with http.get(f"{stack.url}/ready") as ready:
        assert ready.status == 200
    response = await call(http, stack, "POST", "/api/auth/register",
                          body={"username": USERNAME, "password": PASSWORD})
    assert response.status == 201
    token = await login(http, stack)
    assert (await call(http, stack, "GET", "/api/media", token)).status == 200
    records = await rotation_records(stack)
    assert [json.loads(record["detail"])["secret"] for record in records] == [
        "db_auth_password", "db_media_password", "db_gateway_password"]
