"""Fixtures for the media service: the real app on the test database and a temporary root."""

from __future__ import annotations

import io
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from media_samples import CONTENT_TYPE, file_part, form

from services.media.app import create_app
from services.media.settings import load_settings
from shared.keys import DB_POOL
from tests.support import internal_headers


@pytest.fixture
def storage_root(tmp_path: Path) -> Path:
    return tmp_path / "media-root"


@pytest.fixture
def media_env(base_env: dict[str, str], storage_root: Path) -> dict[str, str]:
    # Short worker intervals: a job is claimed and its progress saved within a tick of the
    # test's request instead of after the production poll.
    return {**base_env, "MediaStorage__RootPath": str(storage_root),
            "Import__PollIntervalSeconds": "0.05", "Import__ProgressIntervalSeconds": "0.05"}


class MediaApi:
    """A client for one user of the real media app, with the internal identity set."""

    def __init__(self, client: TestClient, internal_key: str, user_id: str | None = None
                 ) -> None:
        self.client = client
        self.internal_key = internal_key
        self.user_id = user_id or str(uuid.uuid4())

    @property
    def app(self) -> web.Application:
        return self.client.app

    @property
    def root(self) -> Path:
        from services.media.keys import STORAGE

        return self.app[STORAGE].root

    def headers(self, **extra: str) -> dict[str, str]:
        return {**internal_headers(self.internal_key, "media", user_id=self.user_id), **extra}

    def as_user(self, user_id: str | None = None) -> MediaApi:
        return MediaApi(self.client, self.internal_key, user_id)

    async def post_form(self, body: Any, content_type: str = CONTENT_TYPE, **headers: str):
        if isinstance(body, bytes) and len(body) > 1024 * 1024:
            body = io.BytesIO(body)
        return await self.client.post("/media", data=body,
                                      headers=self.headers(**{"Content-Type": content_type},
                                                           **headers))

    async def upload(self, filename: str, data: bytes, *fields: bytes):
        return await self.post_form(form(*fields, file_part(filename, data)))

    async def upload_ok(self, filename: str, data: bytes, *fields: bytes) -> dict[str, Any]:
        response = await self.upload(filename, data, *fields)
        body = await response.json()
        assert response.status == 201, body
        assert body["errors"] == []
        return body["items"][0]

    async def get(self, path: str, **headers: str):
        return await self.client.get(path, headers=self.headers(**headers))

    async def patch(self, path: str, json: Any):
        return await self.client.patch(path, json=json, headers=self.headers())

    async def delete(self, path: str):
        return await self.client.delete(path, headers=self.headers())


MakeApi = Callable[..., Awaitable[MediaApi]]


@pytest.fixture
def make_api(aiohttp_client, media_env: dict[str, str], internal_key: str) -> MakeApi:
    """Start the real app with extra settings (e.g. a small size limit); ``prepare`` may
    add to the app before it starts."""

    async def make(prepare: Callable[[web.Application], None] | None = None,
                   **settings: str) -> MediaApi:
        app = create_app(load_settings({**media_env, **settings}))
        if prepare is not None:
            prepare(app)
        client = await aiohttp_client(app)
        return MediaApi(client, internal_key)

    return make


@pytest.fixture
async def api(make_api: MakeApi) -> MediaApi:
    return await make_api()


Snapshot = tuple[frozenset[tuple[Any, ...]], frozenset[tuple[str, int]]]


async def snapshot(api: MediaApi) -> Snapshot:
    """Every row of media.media and every file under the storage root (with its size)."""
    async with api.app[DB_POOL].acquire() as connection:
        rows = await connection.fetch(
            "SELECT id, owner_id, sha256, size_bytes, filename FROM media.media")
    files = frozenset(
        (str(path.relative_to(api.root)), path.stat().st_size)
        for path in api.root.rglob("*") if not path.is_dir()
    )
    return frozenset(tuple(row) for row in rows), files


class Unchanged:
    """``async with unchanged(api): ...`` asserts the table and the root are as before."""

    def __init__(self, api: MediaApi) -> None:
        self.api = api
        self.before: Any = None

    async def __aenter__(self) -> Unchanged:
        self.before = await snapshot(self.api)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if exc_info[0] is None:
            after = await snapshot(self.api)
            assert after == self.before, "a refusal left rows or files behind"


@pytest.fixture
def unchanged() -> Callable[[MediaApi], Unchanged]:
    return Unchanged
