"""Importing a realistic Strava export through the real app, database and storage root."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest
from import_support import (
    BLUE,
    GREEN,
    RED,
    RUN_FIT_GZ,
    clean_import_tables,  # noqa: F401 - a fixture, used through pytestmark
    files_under,
    import_done,
    realistic_export,
    rows,
    summary_counts,
    world,
)

pytestmark = pytest.mark.usefixtures("clean_import_tables")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def test_a_strava_export_imports_runs_media_and_counts_the_rest(api) -> None:
    state = await import_done(api, realistic_export())
    assert summary_counts(state) == {
        "activitiesFound": 8, "activitiesImported": 3, "mediaImported": 3,
        "notRun": 1, "duplicate": 3, "missingFile": 2, "invalid": 1,
    }
    codes = sorted((e["entry"], e["code"]) for e in state["summary"]["errors"])
    assert codes == [("activities.csv:8", "invalid_row"),
                     ("activities/104.gpx", "missing_file"),
                     ("media/gone.jpg", "missing_file")]
    assert state["summary"]["errorsOmitted"] == 0
    assert state["progress"]["entriesDone"] == state["progress"]["entriesTotal"]
    assert state["progress"]["bytesDone"] > 0
    assert state["startedAt"] is not None
    assert state["finishedAt"] is not None

    activities = {r["strava_id"]: r for r in await rows(api, "activities")}
    assert set(activities) == {"101", "103", "106"}
    tempo = activities["103"]
    assert tempo["activity_type"] == "Run"
    assert tempo["name"] == "Tempo run"
    assert tempo["started_at"] == datetime(2024, 2, 10, 18, 15, tzinfo=UTC)
    assert tempo["elapsed_seconds"] == 2520
    assert tempo["distance_meters"] == pytest.approx(8012.5)
    assert tempo["file_format"] == "fit.gz"
    assert tempo["sha256"] == sha(RUN_FIT_GZ)
    assert activities["106"]["sha256"] is None
    for row in activities.values():
        if row["sha256"] is None:
            continue
        path = api.root / ".activities" / str(row["owner_id"]) / str(row["id"])
        assert sha(path.read_bytes()) == row["sha256"]
        assert path.stat().st_mode & 0o777 == 0o600

    response = await api.get("/media?workoutId=strava:101")
    items = (await response.json())["items"]
    assert sorted(item["sha256"] for item in items) == sorted([sha(RED), sha(BLUE)])
    assert {item["filename"] for item in items} == {"red.jpg", "blue.png"}
    response = await api.get("/media?workoutId=strava:103")
    (green,) = (await response.json())["items"]
    content = await api.get(f"/media/{green['id']}/content")
    assert await content.read() == GREEN

    # The uploaded archive is gone, and nothing half-written stayed.
    files = files_under(api.root)
    assert not [name for name in files if name.startswith((".imports/", ".tmp/"))]
    assert len([name for name in files if name.startswith(".activities/")]) == 2


async def test_running_the_same_import_again_changes_nothing(api) -> None:
    await import_done(api, realistic_export())
    before = await world(api)
    state = await import_done(api, realistic_export())
    counts = summary_counts(state)
    assert counts["activitiesImported"] == 0
    assert counts["mediaImported"] == 0
    assert counts["duplicate"] == 3 + 3 + 3  # activities, media, and the first run's dups
    after = await world(api)
    assert after[0] == before[0]
    assert after[1] == before[1]
    assert after[3] == before[3]


async def test_imports_belong_to_their_owner(api) -> None:
    state = await import_done(api, realistic_export())
    other = api.as_user()
    response = await other.get(f"/imports/{state['id']}")
    assert response.status == 404
    response = await other.delete(f"/imports/{state['id']}")
    assert response.status == 404
    response = await other.get("/imports")
    assert (await response.json())["items"] == []
    response = await api.get("/imports")
    assert [item["id"] for item in (await response.json())["items"]] == [state["id"]]
    for bad in ("not-a-uuid", "..%2F..%2Fetc", "0" * 36):
        assert (await api.get(f"/imports/{bad}")).status == 404


async def test_activity_types_are_configurable(make_api) -> None:
    api = await make_api(Import__ActivityTypes="Run,Ride")
    state = await import_done(api, realistic_export())
    counts = summary_counts(state)
    assert counts["notRun"] == 0
    assert counts["activitiesImported"] == 4
    assert counts["mediaImported"] == 4


async def test_the_archive_is_kept_when_configured(make_api) -> None:
    api = await make_api(Import__KeepArchive="true")
    state = await import_done(api, realistic_export())
    kept = [name for name in files_under(api.root) if name.startswith(".imports/")]
    assert kept == [f".imports/{api.user_id}/{state['id']}.zip"]


async def test_the_error_list_is_bounded_with_a_count_of_the_rest(api) -> None:
    from tests.media_archives import Row, activities_csv, zip_bytes

    rows_ = [Row(f"bad-{index}") for index in range(130)]
    state = await import_done(api, zip_bytes([("activities.csv", activities_csv(rows_))]))
    summary = state["summary"]
    assert summary["activitiesFound"] == 130
    assert summary["skipped"]["invalid"] == 130
    assert len(summary["errors"]) == 100
    assert summary["errorsOmitted"] == 30
    assert summary["errors"][0]["entry"] == "activities.csv:1"
