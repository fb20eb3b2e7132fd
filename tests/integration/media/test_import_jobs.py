"""The import as a background job: progress, one at a time per user, cancel, restarts."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid

import asyncpg
import pytest
from import_support import (
    COUNT,
    big_export,
    clean_import_tables,  # noqa: F401 - a fixture, used through pytestmark
    files_under,
    import_state,
    rows,
    start_import,
    summary_counts,
    wait_for,
)

pytestmark = pytest.mark.usefixtures("clean_import_tables")

async def db_connect(database_url: str) -> asyncpg.Connection:
    return await asyncpg.connect(database_url)


async def test_progress_advances_while_processing(api) -> None:
    import_id = await start_import(api, big_export())
    seen: list[tuple[float, int, int]] = []
    while True:
        state = await import_state(api, import_id)
        if state["status"] == "processing":
            progress = state["progress"]
            seen.append((time.monotonic(), progress["entriesDone"], progress["bytesDone"]))
            # Known once activities.csv has been read.
            assert progress["entriesTotal"] in {0, 1, 2 * COUNT + 1}
        if state["status"] in {"done", "failed", "cancelled"}:
            break
        await asyncio.sleep(0.1)
    assert state["status"] == "done", state
    assert state["progress"]["entriesTotal"] == state["progress"]["entriesDone"] == 2 * COUNT + 1
    assert state["progress"]["bytesDone"] >= state["progress"]["bytesTotal"] > 0
    assert summary_counts(state)["activitiesImported"] == COUNT
    assert summary_counts(state)["mediaImported"] == COUNT
    values = sorted({done for _, done, _ in seen if 0 < done < 2 * COUNT + 1})
    assert len(values) >= 3, seen
    # Saved at least every second while processing: no still stretch much longer than it.
    changes = [seen[0][0]] + [b[0] for a, b in itertools.pairwise(seen)
                              if (a[1], a[2]) != (b[1], b[2])]
    gaps = [b - a for a, b in itertools.pairwise(changes)]
    assert max(gaps, default=0) < 2.5, gaps


async def test_one_import_runs_at_a_time_per_user(make_api) -> None:
    api = await make_api(Import__Workers="4")
    first = await start_import(api, big_export())
    second = await start_import(api, big_export(10, salt=1))
    await wait_for(api, first, {"processing"}, entriesDone=1)
    # Another user's import does not wait for this user's.
    other = api.as_user()
    third = await start_import(other, big_export(10, salt=2))
    assert (await import_state(api, second))["status"] == "queued"
    assert (await wait_for(other, third))["status"] == "done"
    assert (await import_state(api, first))["status"] in {"processing", "done"}
    done = await wait_for(api, second)
    assert done["status"] == "done"
    first_state = await import_state(api, first)
    assert first_state["status"] == "done"
    assert done["startedAt"] >= first_state["finishedAt"]
    listed = await (await api.get("/imports")).json()
    assert [item["id"] for item in listed["items"]] == [second, first]


async def test_cancelling_a_running_import_stops_it_and_removes_its_archive(api) -> None:
    import_id = await start_import(api, big_export(salt=3))
    await wait_for(api, import_id, {"processing"}, entriesDone=5)
    response = await api.delete(f"/imports/{import_id}")
    body = await response.json()
    assert response.status == 200, body
    assert body["status"] == "cancelled"
    assert body["finishedAt"] is not None
    stopped_at = body["progress"]["entriesDone"]
    assert stopped_at < 2 * COUNT + 1
    await asyncio.sleep(1.2)
    state = await import_state(api, import_id)
    assert state["status"] == "cancelled"
    assert state["progress"]["entriesDone"] <= stopped_at + 2
    files = files_under(api.root)
    assert not [name for name in files if name.startswith((".imports/", ".tmp/"))]
    # What was stored before the cancel is whole: every row has its file and no more.
    media = await rows(api, "media")
    activities = await rows(api, "activities")
    stored = {name for name in files if not name.startswith(".")}
    assert stored == {f"{api.user_id}/{row['id']}" for row in media}
    assert {name for name in files if name.startswith(".activities/")} == {
        f".activities/{api.user_id}/{row['id']}" for row in activities}
    again = await api.delete(f"/imports/{import_id}")
    assert again.status == 200


async def test_cancelling_a_queued_import(make_api) -> None:
    api = await make_api(Import__Workers="1")
    running = await start_import(api, big_export(salt=4))
    queued = await start_import(api, big_export(10, salt=5))
    response = await api.delete(f"/imports/{queued}")
    assert response.status == 200
    assert (await response.json())["status"] == "cancelled"
    assert not (api.root / ".imports" / api.user_id / f"{queued}.zip").exists()
    assert (await wait_for(api, running))["status"] == "done"
    assert (await import_state(api, queued))["status"] == "cancelled"


async def test_a_finished_import_cannot_be_cancelled(api) -> None:
    import_id = await start_import(api, big_export(3, salt=6))
    await wait_for(api, import_id)
    response = await api.delete(f"/imports/{import_id}")
    assert response.status == 409
    assert (await response.json())["code"] == "import_finished"
    assert (await api.delete(f"/imports/{uuid.uuid4()}")).status == 404


async def test_a_restart_mid_import_resumes_it(make_api, database_url: str) -> None:
    first = await make_api()
    import_id = await start_import(first, big_export(salt=7))
    await wait_for(first, import_id, {"processing"}, entriesDone=9)
    await first.client.close()
    connection = await db_connect(database_url)
    try:
        row = await connection.fetchrow("SELECT status, attempts FROM media.imports"
                                        " WHERE id = $1", uuid.UUID(import_id))
    finally:
        await connection.close()
    assert (row["status"], row["attempts"]) == ("queued", 1)

    second = (await make_api()).as_user(first.user_id)
    state = await wait_for(second, import_id)
    assert state["status"] == "done", state
    counts = summary_counts(state)
    # What the first attempt stored is counted as imported, not as duplicates.
    assert counts["activitiesImported"] == COUNT
    assert counts["mediaImported"] == COUNT
    assert counts["duplicate"] == 0
    assert len(await rows(second, "activities")) == COUNT
    assert len(await rows(second, "media")) == COUNT
    assert not [n for n in files_under(second.root) if n.startswith((".imports/", ".tmp/"))]


async def _crashed(make_api, database_url: str, **changes) -> tuple[object, str]:
    """An import left 'processing' by a process that died without a word."""
    first = await make_api()
    import_id = await start_import(first, big_export(salt=8))
    await first.client.close()
    connection = await db_connect(database_url)
    try:
        await connection.execute(
            "UPDATE media.imports SET status = 'processing', attempts = $2,"
            " heartbeat_at = now() - interval '1 hour' WHERE id = $1",
            uuid.UUID(import_id), changes.get("attempts", 1))
    finally:
        await connection.close()
    return first, import_id


async def test_an_import_orphaned_by_a_crash_is_resumed(make_api, database_url: str) -> None:
    first, import_id = await _crashed(make_api, database_url)
    second = (await make_api(Import__StaleAfterSeconds="1")).as_user(first.user_id)
    state = await wait_for(second, import_id)
    assert state["status"] == "done"
    assert summary_counts(state)["activitiesImported"] == COUNT


async def test_an_import_interrupted_too_often_fails_with_the_reason(
        make_api, database_url: str) -> None:
    first, import_id = await _crashed(make_api, database_url, attempts=3)
    second = (await make_api(Import__StaleAfterSeconds="1")).as_user(first.user_id)
    state = await wait_for(second, import_id)
    assert state["status"] == "failed"
    (error,) = state["summary"]["errors"]
    assert error["code"] == "interrupted"
    assert "restart" in error["message"]
    assert not [n for n in files_under(second.root) if n.startswith(".imports/")]


async def test_an_import_whose_archive_vanished_fails_with_the_reason(
        make_api, database_url: str) -> None:
    first, import_id = await _crashed(make_api, database_url)
    (first.root / ".imports" / first.user_id / f"{import_id}.zip").unlink()
    second = (await make_api(Import__StaleAfterSeconds="1")).as_user(first.user_id)
    state = await wait_for(second, import_id)
    assert state["status"] == "failed"
    assert state["summary"]["errors"][0]["code"] == "archive_missing"
