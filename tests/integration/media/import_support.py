"""Helpers for the import and export tests: upload, wait, and look at rows and files."""

from __future__ import annotations

import asyncio
import functools
import io
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from services.media.imports.files import ImportFiles
from services.media.storage import MediaStorage
from shared.keys import DB_POOL
from tests.media_archives import (
    Row,
    activities_csv,
    fit_gz,
    gpx,
    jpeg,
    noise_jpeg,
    png,
    zip_bytes,
)

FINAL = {"done", "failed", "cancelled"}


@pytest.fixture
async def clean_import_tables(database_url: str):
    """Empty the import tables after a test: the database outlives each test's storage
    root, and rows pointing into a removed root would look broken to a later fsck."""
    yield
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(
            "TRUNCATE media.activities, media.import_media, media.imports")
    except asyncpg.UndefinedTableError:
        pass
    finally:
        await connection.close()


def archive_form(data: bytes, filename: str = "export.zip",
                 content_type: str = "application/zip") -> aiohttp.FormData:
    form = aiohttp.FormData(default_to_multipart=True)
    form.add_field("file", io.BytesIO(data), filename=filename, content_type=content_type)
    return form


async def post_import(api, data: bytes, filename: str = "export.zip"):
    return await api.client.post("/imports", data=archive_form(data, filename),
                                 headers=api.headers())


async def start_import(api, data: bytes) -> str:
    response = await post_import(api, data)
    body = await response.json()
    assert response.status == 202, body
    assert body["status"] == "queued"
    assert response.headers["Location"] == f"imports/{body['id']}"
    return body["id"]


async def import_state(api, import_id: str) -> dict[str, Any]:
    response = await api.get(f"/imports/{import_id}")
    assert response.status == 200, await response.text()
    return await response.json()


async def wait_for(api, import_id: str, statuses: set[str] = FINAL,
                   timeout: float = 60.0, **progress_at_least: int) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        state = await import_state(api, import_id)
        if state["status"] in statuses and all(
                state["progress"][key] >= value for key, value in progress_at_least.items()):
            return state
        if state["status"] in FINAL and state["status"] not in statuses:
            raise AssertionError(f"import ended {state['status']}: {state}")
        if time.monotonic() > deadline:
            raise AssertionError(f"import did not reach {statuses}: {state}")
        await asyncio.sleep(0.05)


async def import_done(api, data: bytes) -> dict[str, Any]:
    state = await wait_for(api, await start_import(api, data))
    assert state["status"] == "done", state
    return state


def files_under(root: Path) -> dict[str, int]:
    return {str(path.relative_to(root)): path.stat().st_size
            for path in root.rglob("*") if not path.is_dir()}


async def rows(api, table: str) -> list[dict[str, Any]]:
    """The user's rows of one table (the database is shared by the whole test run)."""
    assert table in {"media", "activities", "imports"}
    async with api.app[DB_POOL].acquire() as connection:
        return [dict(row) for row in await connection.fetch(
            f"SELECT * FROM media.{table} WHERE owner_id = $1", uuid.UUID(api.user_id))]


async def world(api) -> tuple[Any, ...]:
    """The user's rows of the media tables and every file under the root."""
    media = sorted((str(r["id"]), r["sha256"]) for r in await rows(api, "media"))
    activities = sorted((str(r["id"]), r["strava_id"]) for r in await rows(api, "activities"))
    imports = sorted(str(r["id"]) for r in await rows(api, "imports"))
    return media, activities, imports, files_under(api.root)


def summary_counts(state: dict[str, Any]) -> dict[str, Any]:
    summary = state["summary"]
    return {
        "activitiesFound": summary["activitiesFound"],
        "activitiesImported": summary["activitiesImported"],
        "mediaImported": summary["mediaImported"],
        **summary["skipped"],
    }


RED, GREEN = jpeg((220, 20, 20)), jpeg((20, 200, 20))
BLUE = png((20, 20, 220))
RUN_GPX = gpx(20, "Canal loop")
RIDE_FIT_GZ = fit_gz(b"\x01" * 64)
RUN_FIT_GZ = fit_gz(b"\x02" * 64)


def realistic_export() -> bytes:
    rows_ = [
        Row("101", name="Canal loop", filename="activities/101.gpx",
            media=["media/red.jpg", "media/blue.png"]),
        Row("102", activity_type="Ride", name="Commute", filename="activities/102.fit.gz",
            media=["media/ride.jpg"]),
        Row("103", name="Tempo run", date="Feb 10, 2024, 6:15:00 PM", elapsed="2520",
            distance_m="8012.5", filename="activities/103.fit.gz", media=["media/green.jpg"]),
        # Its file is not in the archive.
        Row("104", filename="activities/104.gpx"),
        # Same bytes as 101's file, and a photo already brought in by 101.
        Row("105", filename="activities/105.gpx", media=["media/red-copy.jpg"]),
        # Entered by hand on Strava: no file; its photo is missing from the archive.
        Row("106", name="Treadmill", media=["media/gone.jpg"]),
        # The same activity twice.
        Row("101", name="Canal loop", filename="activities/101.gpx"),
        Row("not-a-number"),
    ]
    return zip_bytes([
        ("activities.csv", activities_csv(rows_)),
        ("activities/", b""),
        ("activities/101.gpx", RUN_GPX),
        ("activities/102.fit.gz", RIDE_FIT_GZ),
        ("activities/103.fit.gz", RUN_FIT_GZ),
        ("activities/105.gpx", RUN_GPX),
        ("media/red.jpg", RED),
        ("media/blue.png", BLUE),
        ("media/ride.jpg", jpeg((9, 9, 9))),
        ("media/green.jpg", GREEN),
        ("media/red-copy.jpg", RED),
        ("profile.csv", b"Name\nRunner\n"),
    ])


COUNT = 200


@functools.cache
def big_export(count: int = COUNT, salt: int = 0) -> bytes:
    """``count`` runs, each with a GPX track and a photo of its own."""
    entries = []
    rows_ = []
    for index in range(count):
        strava_id = str(10_000 + salt * 1000 + index)
        entries.append((f"activities/{strava_id}.gpx", gpx(1500 + index, f"Run {index}")))
        entries.append((f"media/{strava_id}.jpg",
                        noise_jpeg((48, 48), seed=salt * 1000 + index)))
        rows_.append(Row(strava_id, name=f"Run {index}", filename=f"activities/{strava_id}.gpx",
                         media=[f"media/{strava_id}.jpg"]))
    return zip_bytes([("activities.csv", activities_csv(rows_)), *entries])


async def one_chunk(data: bytes) -> AsyncIterator[bytes]:
    yield data


def temp_files(storage: MediaStorage) -> list[Path]:
    return list(storage.temp_dir.iterdir())


class CommitFailed(Exception):
    """Raised by ``fail_after_placing``."""


def fail_after_placing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every batch fail after its files were renamed into place, before its commit."""
    real_place_all = ImportFiles.place_all

    async def place_then_fail(self: ImportFiles, moves: Any) -> None:
        await real_place_all(self, moves)
        raise CommitFailed()

    monkeypatch.setattr(ImportFiles, "place_all", place_then_fail)
