"""Backup of a running stack → wipe → restore → the same users and byte-identical media,
served again by the restarted services; a tampered backup restores nothing."""

from __future__ import annotations

import asyncio
import shutil
from http.cookies import SimpleCookie
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import pyrage
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from deploy import backup, roles
from tests.e2e.support_edge import PASSWORD, assert_fsck_clean, media_tree, png_bytes
from tests.support import AUTH_COOKIE, strong_secret, with_user

pytestmark = pytest.mark.timeout(300)


def in_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, ""))


async def table_digests(url: str) -> dict[str, tuple[int, str]]:
    """Row count and a digest of every row of every table of auth and media."""
    connection = await asyncpg.connect(url)
    try:
        tables = await connection.fetch(
            "SELECT table_schema, table_name FROM information_schema.tables"
            " WHERE table_schema IN ('auth', 'media') AND table_type = 'BASE TABLE'")
        result = {}
        for row in tables:
            name = f'"{row["table_schema"]}"."{row["table_name"]}"'
            result[name] = tuple(await connection.fetchrow(
                f"SELECT count(*), coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '')"
                f" FROM {name} t"))
        return result
    finally:
        await connection.close()


async def sign_in_direct(client: aiohttp.ClientSession, url: str) -> str:
    """Register and log in through the gateway over plain HTTP; the cookie is Secure, so it
    is sent by hand, as a browser would over HTTPS."""
    async with client.post(f"{url}/api/auth/register",
                           json={"username": "keeper", "password": PASSWORD}) as response:
        assert response.status in (201, 403)
    async with client.post(f"{url}/api/auth/login",
                           json={"username": "keeper", "password": PASSWORD}) as response:
        assert response.status == 200, await response.text()
        return SimpleCookie(response.headers["Set-Cookie"])[AUTH_COOKIE].value


async def test_backup_wipe_restore_gives_the_same_rows_and_media(make_stack, postgres_admin_url,
                                                                 tmp_path):
    stack = await asyncio.to_thread(make_stack)
    url = stack.url
    database_url = in_database(postgres_admin_url, stack.stack.database)
    images = [png_bytes(), png_bytes()]
    async with aiohttp.ClientSession(headers={"Origin": url}) as client:
        token = await sign_in_direct(client, url)
        cookie = {"Cookie": f"{AUTH_COOKIE}={token}"}
        ids = []
        for image in images:
            form = aiohttp.FormData()
            form.add_field("file", image, filename="p.png", content_type="image/png")
            async with client.post(f"{url}/api/media", data=form, headers=cookie) as response:
                assert response.status == 201, await response.text()
                ids.append((await response.json())["items"][0]["id"])

    before_rows = await table_digests(database_url)
    before_media = {path: (stack.stack.media_root / path).read_bytes()
                    for path in media_tree(stack)}
    assert any(count for count, _ in before_rows.values())

    identity = pyrage.x25519.Identity.generate()
    signer = Ed25519PrivateKey.generate()
    opening = backup.Keys(identities=(identity,), verify_key=signer.public_key())
    out = tmp_path / "stack.age"
    source = backup.Database(database_url, None)
    await asyncio.to_thread(backup.create, out, backup.Keys(
        recipients=(identity.to_public(),), signing_key=signer), source, stack.stack.media_root)

    for name in ("gateway", "media", "auth"):
        await asyncio.to_thread(stack.stop_service, name)
    # The wipe leaves what a fresh deployment's database has: the roles and their empty
    # schemas, and the restore role holding them.
    owners = stack.stack.role_names
    restorer = f"{stack.stack.role_prefix}_restore"
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute("DROP SCHEMA auth CASCADE; DROP SCHEMA media CASCADE")
        await admin.execute(f'CREATE SCHEMA auth AUTHORIZATION "{owners["auth"]}";'
                            f' CREATE SCHEMA media AUTHORIZATION "{owners["media"]}"')
        await roles.ensure_restore_role(admin, stack.stack.database, restorer, strong_secret(),
                                        [owners["auth"], owners["media"]])
    finally:
        await admin.close()
    target = backup.Database(with_user(database_url, restorer), None)
    shutil.rmtree(stack.stack.media_root)

    tampered = tmp_path / "tampered.age"
    data = bytearray(out.read_bytes())
    data[len(data) // 3] ^= 0x40
    tampered.write_bytes(bytes(data))
    try:
        with pytest.raises(backup.BackupError, match=r"truncated|altered"):
            await asyncio.to_thread(backup.restore, tampered, opening, target,
                                    stack.stack.media_root)
        assert await table_digests(database_url) == {}
        assert not stack.stack.media_root.exists() or media_tree(stack) == {}

        await asyncio.to_thread(backup.restore, out, opening, target, stack.stack.media_root)
    finally:
        admin = await asyncpg.connect(database_url)
        try:
            await roles.drop_roles(admin, [restorer])
        finally:
            await admin.close()
    assert await table_digests(database_url) == before_rows
    assert {path: (stack.stack.media_root / path).read_bytes()
            for path in media_tree(stack)} == before_media

    for name in ("auth", "media", "gateway"):
        await asyncio.to_thread(stack.start_service, name)
    async with aiohttp.ClientSession(headers={"Origin": url}) as client:
        token = await sign_in_direct(client, url)
        for media_id, image in zip(ids, images, strict=True):
            async with client.get(f"{url}/api/media/{media_id}/content",
                                  headers={"Cookie": f"{AUTH_COOKIE}={token}"}) as response:
                assert response.status == 200
                assert await response.read() == image
    assert_fsck_clean(stack)
