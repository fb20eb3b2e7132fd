"""The media audit trail: one record per audited action with who, from where, the request
id and the outcome; append-only; purged only past retention; paged per user."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from datetime import datetime

import asyncpg
import pytest
from import_support import clean_import_tables, realistic_export, start_import, wait_for  # noqa: F401
from media_samples import jpeg

from services.media.fsck import run_fsck
from services.media.settings import load_settings
from shared.audit import Position, encode_position
from tests.support import internal_headers

pytestmark = pytest.mark.usefixtures("clean_import_tables")

CLIENT_IP = "203.0.113.77"


def headers(api, request_id: str, user_id: str | None = None) -> dict[str, str]:
    return {**internal_headers(api.internal_key, "media", user_id=user_id or api.user_id,
                               client_ip=CLIENT_IP),
            "X-Request-ID": request_id}


@pytest.fixture
async def db(database_url: str):
    connection = await asyncpg.connect(database_url)
    yield connection
    await connection.close()


async def records(db, user_id: str | None, action: str | None = None) -> list[dict]:
    rows = await db.fetch(
        "SELECT * FROM media.audit_events WHERE user_id IS NOT DISTINCT FROM $1::uuid"
        " AND ($2::text IS NULL OR action = $2) ORDER BY id", user_id, action)
    return [{**dict(row), "detail": json.loads(row["detail"])} for row in rows]


async def test_deleting_media_records_one_success_with_actor_ip_and_request_id(api, db):
    item = await api.upload_ok("a.jpg", jpeg())
    response = await api.client.delete(f"/media/{item['id']}",
                                       headers=headers(api, "req-delete-1"))
    assert response.status == 204
    (record,) = await records(db, api.user_id)
    assert record["action"] == "media_delete"
    assert record["outcome"] == "success"
    assert record["actor"] == api.user_id
    assert record["ip"] == CLIENT_IP
    assert record["request_id"] == "req-delete-1"
    assert record["detail"] == {"mediaId": item["id"]}
    assert record["occurred_at"] is not None


async def test_deleting_missing_media_records_one_not_found(api, db):
    missing = str(uuid.uuid4())
    response = await api.client.delete(f"/media/{missing}", headers=headers(api, "req-d2"))
    assert response.status == 404
    (record,) = await records(db, api.user_id)
    assert (record["action"], record["outcome"]) == ("media_delete", "not_found")


async def test_export_records_one_success_with_counts_and_no_content(api, db):
    await api.upload_ok("a.jpg", jpeg())
    response = await api.client.get("/export", headers=headers(api, "req-export-1"))
    assert response.status == 200
    await response.read()
    (record,) = await records(db, api.user_id)
    assert (record["action"], record["outcome"]) == ("export", "success")
    assert record["request_id"] == "req-export-1"
    assert set(record["detail"]) == {"media", "activities", "bytes"}
    assert record["detail"]["media"] == 1


async def test_import_records_its_start_and_its_outcome_once_each(api, db):
    import_id = await start_import(api, realistic_export())
    state = await wait_for(api, import_id)
    assert state["status"] == "done"
    start, end = await records(db, api.user_id)
    assert (start["action"], start["outcome"]) == ("import_start", "success")
    assert start["detail"]["importId"] == import_id
    assert start["ip"] == "127.0.0.1"
    assert (end["action"], end["outcome"]) == ("import_end", "success")
    assert end["detail"]["importId"] == import_id
    assert end["actor"] == api.user_id


async def test_a_cancelled_import_records_one_cancelled_outcome(api, db):
    import_id = await start_import(api, realistic_export())
    response = await api.client.delete(f"/imports/{import_id}",
                                       headers=headers(api, "req-cancel"))
    ends = await records(db, api.user_id, "import_end")
    if response.status == 409:
        # It finished first: the outcome is the worker's, recorded once.
        assert [end["outcome"] for end in ends] == ["success"]
        return
    assert response.status == 200
    await asyncio.sleep(0.5)
    ends = await records(db, api.user_id, "import_end")
    assert [(e["outcome"], e["request_id"]) for e in ends] == [("cancelled", "req-cancel")]


async def test_fsck_repair_records_one_admin_record_and_a_plain_check_none(api, db,
                                                                          media_env):
    before = await records(db, None, "fsck_repair")
    await run_fsck(load_settings(media_env), repair=False, out=io.StringIO())
    assert await records(db, None, "fsck_repair") == before
    await run_fsck(load_settings(media_env), repair=True, out=io.StringIO())
    after = await records(db, None, "fsck_repair")
    assert len(after) == len(before) + 1
    assert (after[-1]["actor"], after[-1]["outcome"]) == ("admin", "success")


@pytest.mark.parametrize("statement", [
    "UPDATE media.audit_events SET outcome = 'success'",
    "DELETE FROM media.audit_events",
    "TRUNCATE media.audit_events",
])
async def test_audit_records_cannot_be_rewritten_even_by_their_owner(api, db, statement):
    await api.client.delete(f"/media/{uuid.uuid4()}", headers=headers(api, "r"))
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await db.execute(statement)
    assert len(await records(db, api.user_id)) == 1


async def test_the_writer_cannot_backdate_a_record(api, db):
    await db.execute("INSERT INTO media.audit_events (occurred_at, action, outcome, actor,"
                     " user_id) VALUES (now() - interval '400 days', 'x', 'success', $1::text,"
                     " $1::uuid)", api.user_id)
    (record,) = await records(db, api.user_id)
    assert (await db.fetchval("SELECT now()") - record["occurred_at"]).days == 0


async def test_purge_removes_only_records_past_retention_and_never_under_30_days(api, db):
    async with db.transaction():
        # An operator's bypass, to plant a record as old as a real one would be.
        await db.execute("SET LOCAL session_replication_role = replica")
        await db.execute("INSERT INTO media.audit_events (occurred_at, action, outcome, actor,"
                         " user_id) VALUES (now() - interval '400 days', 'old', 'success',"
                         " $1::text, $1::uuid)", api.user_id)
    await api.client.delete(f"/media/{uuid.uuid4()}", headers=headers(api, "r"))
    with pytest.raises(asyncpg.InvalidParameterValueError, match="at least 30 days"):
        await db.fetchval("SELECT media.purge_audit(1)")
    # The service's own purge may have run first (it runs at start); either way the old
    # record goes and the recent one stays.
    await db.fetchval("SELECT media.purge_audit(365)")
    assert [r["action"] for r in await records(db, api.user_id)] == ["media_delete"]


async def test_audit_api_pages_the_callers_records_newest_first_and_no_one_elses(api):
    other = str(uuid.uuid4())
    for index in range(5):
        await api.client.delete(f"/media/{uuid.uuid4()}",
                                headers=headers(api, f"request-mine-{index}"))
    await api.client.delete(f"/media/{uuid.uuid4()}", headers=headers(api, "request-theirs", other))
    seen, cursor, sizes = [], None, []
    while True:
        query = "/audit?limit=2" + (f"&cursor={cursor}" if cursor else "")
        response = await api.client.get(query, headers=api.headers())
        body = await response.json()
        assert response.status == 200, body
        sizes.append(len(body["items"]))
        # Commands an administrator ran on the deployment (fsck) are everyone's to see.
        assert {item["actor"] for item in body["items"]} <= {api.user_id, "admin"}
        seen += [item["requestId"] for item in body["items"] if item["actor"] != "admin"]
        if not body["more"]:
            break
        cursor = body["items"][-1]["cursor"]
    assert set(sizes[:-1]) == {2}
    assert seen == [f"request-mine-{index}" for index in reversed(range(5))]


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "limit=x", "cursor=%%%",
                                   "cursor=bm90IGEgcG9zaXRpb24"])
async def test_audit_api_refuses_bad_paging_with_400(api, query):
    response = await api.client.get(f"/audit?{query}", headers=api.headers())
    assert response.status == 400


@pytest.mark.parametrize("stamp", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
async def test_audit_cursor_outside_the_utc_calendar_is_400(api, stamp):
    cursor = encode_position(Position(datetime.fromisoformat(stamp), 1))
    response = await api.client.get(f"/audit?cursor={cursor}", headers=api.headers())
    assert response.status == 400
    assert (await response.json())["code"] == "invalid_cursor"
