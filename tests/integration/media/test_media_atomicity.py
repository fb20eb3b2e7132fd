"""Nothing half-done stays behind: a client gone mid-body, a database failing at insert
or at commit, each leave no temporary file, no stored file and no row."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from conftest import snapshot
from media_samples import CONTENT_TYPE, file_part, form, jpeg, png

from shared.keys import DB_POOL


async def eventually(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if await predicate():
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def user_rows(api) -> int:
    async with api.app[DB_POOL].acquire() as connection:
        return await connection.fetchval(
            "SELECT count(*) FROM media.media WHERE owner_id = $1", api.user_id)


def temp_files(api) -> list:
    return list((api.root / ".tmp").iterdir())


@pytest.mark.parametrize("hard", [False, True], ids=["close", "reset"])
@pytest.mark.parametrize("completed_before", [0, 1], ids=["single-file", "after-a-stored-file"])
async def test_client_disconnect_mid_upload_leaves_no_file_and_no_row(api, hard,
                                                                     completed_before):
    await api.upload_ok("existing.png", png())
    before = await snapshot(api)
    server = api.client.server
    _reader, writer = await asyncio.open_connection(server.host, server.port)
    body = b"".join(file_part(f"done{i}.jpg", jpeg()) for i in range(completed_before))
    body += file_part("cut.jpg", b"")[:-2] + jpeg((50, 50)) + bytes(200_000)
    headers = {**api.headers(), "Content-Type": CONTENT_TYPE, "Content-Length": "50000000",
               "Host": f"{server.host}:{server.port}"}
    head = "POST /media HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    try:
        writer.write(head.encode() + b"\r\n" + body)
        await writer.drain()
        # Keep the body flowing (the multipart reader looks ahead for the boundary) until
        # the last file is half written and every earlier one has its row.
        deadline = time.monotonic() + 10
        while not (len(temp_files(api)) == 1
                   and await user_rows(api) == 1 + completed_before):
            assert time.monotonic() < deadline, "the upload never got under way"
            writer.write(bytes(16_384))
            await writer.drain()
            await asyncio.sleep(0.005)
    finally:
        if hard:
            writer.transport.abort()
        else:
            writer.close()

    async def restored() -> bool:
        return await snapshot(api) == before

    await eventually(restored)
    assert temp_files(api) == []


@pytest.fixture
async def failing_inserts(api):
    """Triggers that make PostgreSQL itself refuse rows with a marker file name, either at
    the INSERT or only at COMMIT (after the file was renamed into place)."""
    async with api.app[DB_POOL].acquire() as connection:
        await connection.execute("""
            CREATE OR REPLACE FUNCTION media.test_refuse_row() RETURNS trigger
            LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused by test trigger'; END $$;
            CREATE TRIGGER test_fail_at_insert BEFORE INSERT ON media.media FOR EACH ROW
                WHEN (NEW.filename LIKE 'fail-at-insert%') EXECUTE FUNCTION media.test_refuse_row();
            CREATE CONSTRAINT TRIGGER test_fail_at_commit AFTER INSERT ON media.media
                DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
                WHEN (NEW.filename LIKE 'fail-at-commit%') EXECUTE FUNCTION media.test_refuse_row();
        """)
    try:
        yield
    finally:
        async with api.app[DB_POOL].acquire() as connection:
            await connection.execute("""
                DROP TRIGGER test_fail_at_insert ON media.media;
                DROP TRIGGER test_fail_at_commit ON media.media;
                DROP FUNCTION media.test_refuse_row();
            """)


@pytest.mark.parametrize("marker", ["fail-at-insert", "fail-at-commit"])
@pytest.mark.parametrize("stored_first", [0, 2], ids=["alone", "after-two-stored"])
async def test_database_failure_leaves_no_file_and_no_row(api, unchanged, failing_inserts,
                                                          marker, stored_first):
    await api.upload_ok("existing.png", png())
    earlier = [file_part(f"ok{i}.png", png((i + 1, 3))) for i in range(stored_first)]
    async with unchanged(api):
        response = await api.post_form(form(*earlier, file_part(f"{marker}.jpg", jpeg()),
                                            file_part("never-reached.png", png())))
        problem = await response.json()
    assert response.status == 500
    assert problem["code"] == "internal_error"
    assert "trigger" not in str(problem)
    assert temp_files(api) == []


async def test_service_stopping_mid_upload_leaves_no_file_and_no_row(media_env, database_url,
                                                                     internal_key):
    """A real server is shut down while a client is half-way through a body: the upload is
    cancelled and cleans up before the database pool closes."""
    import asyncpg
    from aiohttp import web

    from services.media.app import create_app
    from services.media.settings import load_settings
    from tests.support import internal_headers

    settings = load_settings(media_env)
    runner = web.AppRunner(create_app(settings), shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    root = settings.storage.root
    user_id = str(uuid.uuid4())
    connection = await asyncpg.connect(database_url)
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        headers = {**internal_headers(internal_key, "media", user_id=user_id),
                   "Content-Type": CONTENT_TYPE, "Content-Length": "50000000",
                   "Host": f"127.0.0.1:{port}"}
        head = "POST /media HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        writer.write(head.encode() + b"\r\n" + file_part("first.jpg", jpeg())
                     + file_part("cut.jpg", b"")[:-2] + jpeg((40, 40)))
        deadline = time.monotonic() + 10
        while not (list((root / ".tmp").iterdir()) and await connection.fetchval(
                "SELECT count(*) FROM media.media WHERE owner_id = $1", uuid.UUID(user_id))):
            assert time.monotonic() < deadline, "the upload never got under way"
            writer.write(bytes(16_384))
            await writer.drain()
            await asyncio.sleep(0.005)
        await runner.cleanup()
        assert await connection.fetchval(
            "SELECT count(*) FROM media.media WHERE owner_id = $1", uuid.UUID(user_id)) == 0
        assert [p for p in root.rglob("*") if p.is_file()] == []
    finally:
        writer.close()
        await connection.close()
        await runner.cleanup()
