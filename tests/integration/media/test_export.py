"""GET /export: a streamed ZIP of everything a user owns, which imports back elsewhere."""

from __future__ import annotations

import io
import json
import secrets
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from conftest import MediaApi
from import_support import (
    clean_import_tables,  # noqa: F401 - a fixture, used below
    files_under,
    import_done,
    realistic_export,
    rows,
    start_import,
    summary_counts,
    wait_for,
)
from media_samples import file_part, form, part

from services.media.app import create_app
from services.media.settings import load_settings
from tests.media_archives import gpx, noise_jpeg
from tests.support import service_env, with_database

pytestmark = pytest.mark.usefixtures("clean_import_tables")


@pytest.fixture
async def empty_instance(postgres_admin_url: str, jwt_key: str, internal_key: str,
                         tmp_path: Path, aiohttp_client) -> AsyncIterator[MediaApi]:
    """Another media service with its own, empty database and storage root."""
    name = f"tempo_test_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(postgres_admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    env = {**service_env(with_database(postgres_admin_url, name), jwt_key=jwt_key,
                         internal_key=internal_key),
           "MediaStorage__RootPath": str(tmp_path / "other-root")}
    client = await aiohttp_client(create_app(load_settings(env)))
    try:
        yield MediaApi(client, internal_key)
    finally:
        await client.close()
        admin = await asyncpg.connect(postgres_admin_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def export_bytes(api) -> tuple[bytes, object]:
    response = await api.get("/export")
    assert response.status == 200, await response.text()
    return await response.read(), response


async def test_export_is_a_streamed_attachment_with_a_manifest_and_every_file(api) -> None:
    await import_done(api, realistic_export())
    photo = noise_jpeg(seed=42)
    response = await api.post_form(form(part("caption", b"Finish line"),
                                        part("workoutId", b"w-1"),
                                        file_part("finish.jpg", photo)))
    assert response.status == 201

    data, response = await export_bytes(api)
    assert response.headers["Content-Type"] == "application/zip"
    assert response.headers["Content-Disposition"].startswith("attachment;")
    assert response.headers["Content-Disposition"].endswith('.zip"')
    # Streamed as it is made: the length is not known in advance.
    assert "Content-Length" not in response.headers
    assert response.headers["Transfer-Encoding"] == "chunked"

    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None
        manifest = json.loads(archive.read("manifest.json"))
        names = set(archive.namelist())
        assert manifest["format"] == "tempo-export"
        assert manifest["version"] == 1
        media = await rows(api, "media")
        assert len(manifest["media"]) == len(media) == 4
        for item in manifest["media"]:
            assert item["path"] in names
            assert item["path"].startswith("media/")
            assert archive.read(item["path"]) == (api.root / api.user_id / item["id"]
                                                  ).read_bytes()
        finish = next(item for item in manifest["media"] if item["filename"] == "finish.jpg")
        assert finish["caption"] == "Finish line"
        assert archive.read(finish["path"]) == photo
        activities = {a["stravaId"]: a for a in manifest["activities"]}
        assert set(activities) == {"101", "103", "106"}
        assert activities["106"]["path"] is None
        assert archive.read(activities["101"]["path"]) == gpx(20, "Canal loop")
        assert len(manifest["imports"]) == 1
        assert manifest["imports"][0]["status"] == "done"
        assert len(names) == 1 + 4 + 2


async def test_export_holds_only_the_callers_data(api) -> None:
    await import_done(api, realistic_export())
    other = api.as_user()
    data, _ = await export_bytes(other)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.namelist() == ["manifest.json"]
        manifest = json.loads(archive.read("manifest.json"))
    assert manifest["media"] == manifest["activities"] == manifest["imports"] == []


async def test_export_then_import_elsewhere_restores_identical_media_and_metadata(
        api, empty_instance: MediaApi) -> None:
    await import_done(api, realistic_export())
    response = await api.post_form(form(part("caption", b"Finish line"),
                                        file_part("finish.jpg", noise_jpeg(seed=7))))
    assert response.status == 201
    data, _ = await export_bytes(api)

    target = empty_instance
    state = await import_done(target, data)
    counts = summary_counts(state)
    assert counts["mediaImported"] == 4
    assert counts["activitiesImported"] == 3
    assert counts["invalid"] == counts["duplicate"] == counts["missingFile"] == 0

    source_items = {i["sha256"]: i for i in (await (await api.get("/media")).json())["items"]}
    target_items = {i["sha256"]: i for i in
                    (await (await target.get("/media")).json())["items"]}
    assert set(source_items) == set(target_items)
    for sha256, original in source_items.items():
        restored = target_items[sha256]
        for key in ("filename", "mimeType", "sizeBytes", "workoutId", "caption",
                    "createdAt", "width", "height"):
            assert restored.get(key) == original.get(key), key
        before = await (await api.get(f"/media/{original['id']}/content")).read()
        after = await (await target.get(f"/media/{restored['id']}/content")).read()
        assert before == after

    def activity_view(row: dict) -> tuple:
        return (row["strava_id"], row["started_at"], row["name"], row["activity_type"],
                row["distance_meters"], row["elapsed_seconds"], row["file_format"],
                row["size_bytes"], row["sha256"])

    assert sorted(map(activity_view, await rows(api, "activities"))) == sorted(
        map(activity_view, await rows(target, "activities")))
    for row in await rows(target, "activities"):
        if row["sha256"]:
            assert (target.root / ".activities" / target.user_id / str(row["id"])).is_file()
    assert not [n for n in files_under(target.root) if n.startswith((".imports/", ".tmp/"))]

    # Importing the same export again changes nothing.
    again = await import_done(target, data)
    assert summary_counts(again)["mediaImported"] == 0
    assert summary_counts(again)["duplicate"] == 7


async def test_a_forged_manifest_cannot_reach_outside_the_archive(api) -> None:
    from tests.media_archives import jpeg, zip_bytes

    manifest = {"format": "tempo-export", "version": 1, "media": [
        {"path": "../../etc/passwd", "filename": "a.jpg"},
        {"path": "media/x.jpg", "filename": "x.jpg", "workoutId": "w 1"},
        {"path": "media/y.jpg", "filename": "y.jpg", "createdAt": "yesterday"},
        {"path": "media/z.jpg", "filename": "z.jpg", "sha256": "0" * 64},
        "not an object",
    ], "activities": [{"stravaId": "1; DROP TABLE", "type": "Run"},
                      {"stravaId": "2", "type": "Run", "path": "/etc/passwd"}]}
    data = zip_bytes([("manifest.json", json.dumps(manifest).encode()),
                      ("media/x.jpg", jpeg()), ("media/y.jpg", jpeg((1, 1, 1))),
                      ("media/z.jpg", jpeg((2, 2, 2)))])
    state = await import_done(api, data)
    counts = summary_counts(state)
    assert counts["mediaImported"] == 0
    assert counts["activitiesImported"] == 0
    codes = sorted(e["code"] for e in state["summary"]["errors"])
    assert codes == sorted(["invalid_path", "invalid_workout_id", "invalid_manifest_item",
                            "checksum_mismatch", "invalid_manifest_item",
                            "invalid_manifest_item", "invalid_path"])
    assert await rows(api, "media") == []
    assert await rows(api, "activities") == []


async def test_a_manifest_nested_too_deep_fails_as_no_export_not_as_an_internal_error(api):
    from tests.media_archives import zip_bytes

    deep = b'{"format": "tempo-export", "version": 1, "media": ' + b"[" * 30_000 \
        + b"]" * 30_000 + b"}"
    state = await wait_for(api, await start_import(api, zip_bytes([("manifest.json", deep)])))
    assert state["status"] == "failed"
    assert [e["code"] for e in state["summary"]["errors"]] == ["not_an_export"]


async def test_manifest_times_outside_the_utc_calendar_are_malformed_items(api):
    from tests.media_archives import jpeg, zip_bytes

    manifest = {"format": "tempo-export", "version": 1, "media": [
        {"path": "media/x.jpg", "filename": "x.jpg", "createdAt": "0001-01-01T00:00:00+14:00"},
    ], "activities": [{"stravaId": "7", "type": "Run",
                       "startedAt": "9999-12-31T23:59:59-14:00"}]}
    data = zip_bytes([("manifest.json", json.dumps(manifest).encode()),
                      ("media/x.jpg", jpeg())])
    state = await import_done(api, data)
    assert [e["code"] for e in state["summary"]["errors"]] == ["invalid_manifest_item"] * 2
    assert await rows(api, "activities") == []
