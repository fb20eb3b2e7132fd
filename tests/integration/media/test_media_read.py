"""Reading, serving, changing and deleting media: owner-only, with the served headers."""

from __future__ import annotations

import hashlib
import uuid
from urllib.parse import quote

import pytest
from media_samples import jpeg, mp4, part, png

from shared.keys import DB_POOL

NOT_FOUND_IDS = ["not-a-uuid", "00000000-0000-0000-0000-00000000000g",
                 "../../etc/passwd", "%00", str(uuid.uuid4()), "1" * 5000]


# --- metadata and listing ------------------------------------------------------------

async def test_get_media_returns_the_metadata(api):
    item = await api.upload_ok("run.png", png((9, 4)), part("workoutId", b"w-1"),
                               part("caption", b"hello"))
    response = await api.get(f"/media/{item['id']}")
    assert response.status == 200
    body = await response.json()
    assert body == item
    assert set(body) == {"id", "filename", "mimeType", "sizeBytes", "sha256", "workoutId",
                         "caption", "createdAt", "width", "height"}
    assert (body["width"], body["height"]) == (9, 4)


async def test_list_is_newest_first_with_cursor_pagination(api):
    ids = [(await api.upload_ok(f"p{i}.png", png((i + 1, 1))))["id"] for i in range(5)]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        query = "/media?limit=2" + (f"&cursor={cursor}" if cursor else "")
        response = await api.get(query)
        assert response.status == 200
        body = await response.json()
        seen += [item["id"] for item in body["items"]]
        pages += 1
        cursor = body["nextCursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    assert pages == 3


async def test_list_filters_by_workout(api):
    tagged = await api.upload_ok("a.png", png(), part("workoutId", b"strava:1"))
    await api.upload_ok("b.png", png((2, 2)), part("workoutId", b"strava:2"))
    await api.upload_ok("c.png", png((3, 3)))
    body = await (await api.get("/media?workoutId=strava:1")).json()
    assert [i["id"] for i in body["items"]] == [tagged["id"]]


async def test_list_shows_only_the_callers_items(api):
    mine = await api.upload_ok("mine.png", png())
    theirs = await api.as_user().upload_ok("theirs.png", png())
    body = await (await api.get("/media?limit=200")).json()
    ids = [i["id"] for i in body["items"]]
    assert mine["id"] in ids
    assert theirs["id"] not in ids


@pytest.mark.parametrize("query", ["limit=0", "limit=201", "limit=abc", "limit=-1",
                                   "limit=१०", "limit=" + "9" * 5000, "cursor=bm9wZQ",
                                   "cursor=%%%",
                                   "cursor=" + "A" * 500, "workoutId=a/b",
                                   "cursor=eyJjIjoiMjAyNi0wMS0wMSIsImkiOiJ4In0"])
async def test_bad_list_parameters_are_400(api, query):
    response = await api.get(f"/media?{query}")
    assert response.status == 400
    assert (await response.json())["code"] in {"invalid_limit", "invalid_cursor",
                                               "invalid_workout_id"}


# --- owner-only ----------------------------------------------------------------------

async def test_another_users_media_answers_404_like_a_missing_one(api):
    item = await api.upload_ok("private.jpg", jpeg())
    other = api.as_user()
    missing = f"/media/{uuid.uuid4()}"
    for path in (f"/media/{item['id']}", f"/media/{item['id']}/content"):
        response = await other.get(path)
        assert response.status == 404
        missing_response = await other.get(missing + path[len(f"/media/{item['id']}"):])
        assert (await response.json())["code"] == (await missing_response.json())["code"]
    assert (await other.patch(f"/media/{item['id']}", {"caption": "mine now"})).status == 404
    assert (await other.delete(f"/media/{item['id']}")).status == 404
    # Still there, unchanged, for its owner.
    body = await (await api.get(f"/media/{item['id']}")).json()
    assert body["caption"] is None
    assert (api.root / api.user_id / item["id"]).is_file()


@pytest.mark.parametrize("media_id", NOT_FOUND_IDS)
async def test_malformed_or_unknown_id_is_404(api, media_id):
    path = quote(media_id, safe="")
    for suffix in ("", "/content"):
        response = await api.get(f"/media/{path}{suffix}")
        assert response.status == 404, (media_id, suffix)
    assert (await api.patch(f"/media/{path}", {"caption": "x"})).status == 404
    assert (await api.delete(f"/media/{path}")).status == 404


# --- content -------------------------------------------------------------------------

async def test_content_is_served_with_the_security_headers(api):
    data = jpeg((16, 16))
    item = await api.upload_ok("Läufer 🏃 \"quoted\".jpg", data)
    response = await api.get(f"/media/{item['id']}/content")
    assert response.status == 200
    assert await response.read() == data
    headers = response.headers
    assert headers["Content-Type"] == "image/jpeg"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Content-Security-Policy"] == "sandbox; default-src 'none'"
    assert headers["Cache-Control"] == "private"
    assert headers["Accept-Ranges"] == "bytes"
    assert headers["Content-Length"] == str(len(data))
    assert headers["ETag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    assert headers["Content-Disposition"] == (
        "inline; filename=\"L_ufer _ _quoted_.jpg\"; "
        "filename*=UTF-8''L%C3%A4ufer%20%F0%9F%8F%83%20%22quoted%22.jpg")


async def test_content_type_comes_from_the_database(api):
    item = await api.upload_ok("clip.mp4", mp4())
    async with api.app[DB_POOL].acquire() as connection:
        # Whatever the name says, the recorded type is what is served.
        await connection.execute("UPDATE media.media SET filename = 'clip.html' WHERE id = $1",
                                 uuid.UUID(item["id"]))
    response = await api.get(f"/media/{item['id']}/content")
    assert response.headers["Content-Type"] == "video/mp4"
    assert await response.read() == mp4()


async def test_if_none_match_answers_304(api):
    item = await api.upload_ok("a.png", png())
    etag = f'"{item["sha256"]}"'
    for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        response = await api.get(f"/media/{item['id']}/content", **{"If-None-Match": header})
        assert response.status == 304, header
        assert await response.read() == b""
        assert response.headers["ETag"] == etag
        assert response.headers["Cache-Control"] == "private"
    response = await api.get(f"/media/{item['id']}/content", **{"If-None-Match": '"other"'})
    assert response.status == 200


@pytest.mark.parametrize(("header", "start", "end"), [
    ("bytes=0-9", 0, 9),
    ("bytes=10-", 10, None),
    ("bytes=-7", -7, None),
    ("bytes=5-100000000", 5, None),
    ("bytes=0-0", 0, 0),
])
async def test_range_requests_answer_206(api, header, start, end):
    data = mp4()
    item = await api.upload_ok("clip.mp4", data)
    response = await api.get(f"/media/{item['id']}/content", Range=header)
    assert response.status == 206
    expected = data[start:] if end is None else data[start:end + 1]
    assert await response.read() == expected
    first = start if start >= 0 else len(data) + start
    assert response.headers["Content-Range"] == (
        f"bytes {first}-{first + len(expected) - 1}/{len(data)}")
    assert response.headers["Content-Length"] == str(len(expected))
    assert response.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("header", ["bytes=999999-", "bytes=-0"])
async def test_unsatisfiable_range_is_416(api, header):
    data = mp4()
    item = await api.upload_ok("clip.mp4", data)
    response = await api.get(f"/media/{item['id']}/content", Range=header)
    assert response.status == 416
    assert response.headers["Content-Range"] == f"bytes */{len(data)}"


@pytest.mark.parametrize("header", ["bytes=0-1,4-5", "items=0-3", "bytes=9-2", "bytes=x-y",
                                    "bytes=" + "9" * 30 + "-"])
async def test_malformed_or_multiple_ranges_get_the_whole_content(api, header):
    data = mp4()
    item = await api.upload_ok("clip.mp4", data)
    response = await api.get(f"/media/{item['id']}/content", Range=header)
    assert response.status == 200
    assert await response.read() == data


async def test_if_range_with_a_stale_etag_gets_the_whole_content(api):
    data = mp4()
    item = await api.upload_ok("clip.mp4", data)
    path = f"/media/{item['id']}/content"
    fresh = await api.get(path, Range="bytes=0-3", **{"If-Range": f'"{item["sha256"]}"'})
    assert fresh.status == 206
    stale = await api.get(path, Range="bytes=0-3", **{"If-Range": '"0000"'})
    assert stale.status == 200
    assert await stale.read() == data


async def test_head_sends_headers_without_a_body(api):
    data = png()
    item = await api.upload_ok("a.png", data)
    response = await api.client.head(f"/media/{item['id']}/content", headers=api.headers())
    assert response.status == 200
    assert response.headers["Content-Length"] == str(len(data))
    assert await response.read() == b""


async def test_content_whose_file_vanished_is_404_not_500(api):
    item = await api.upload_ok("a.png", png())
    (api.root / api.user_id / item["id"]).unlink()
    response = await api.get(f"/media/{item['id']}/content")
    assert response.status == 404
    assert (await response.json())["code"] == "content_unavailable"


async def test_content_whose_file_changed_size_is_not_served(api):
    item = await api.upload_ok("a.png", png())
    with (api.root / api.user_id / item["id"]).open("ab") as handle:
        handle.write(b"<script>alert(1)</script>")
    response = await api.get(f"/media/{item['id']}/content")
    assert response.status == 404


# --- changing and deleting -----------------------------------------------------------

async def test_patch_changes_caption_and_workout(api):
    item = await api.upload_ok("a.png", png(), part("caption", b"old"))
    response = await api.patch(f"/media/{item['id']}", {"caption": "new", "workoutId": "w:9"})
    assert response.status == 200
    body = await response.json()
    assert (body["caption"], body["workoutId"]) == ("new", "w:9")
    response = await api.patch(f"/media/{item['id']}", {"workoutId": None})
    body = await response.json()
    assert (body["caption"], body["workoutId"]) == ("new", None)
    assert body == await (await api.get(f"/media/{item['id']}")).json()


@pytest.mark.parametrize(("payload", "code"), [
    ({}, "empty_update"),
    ({"filename": "x.html"}, "unknown_field"),
    ({"mimeType": "text/html"}, "unknown_field"),
    ({"caption": 5}, "invalid_field"),
    ({"caption": "x" * 2001}, "caption_too_long"),
    ({"caption": "a\x07b"}, "invalid_caption"),
    ({"caption": "a\x00b"}, "invalid_text"),
    ({"workoutId": "../x"}, "invalid_workout_id"),
    ({"workoutId": ["a"]}, "invalid_field"),
])
async def test_bad_patches_are_400(api, payload, code):
    item = await api.upload_ok("a.png", png())
    response = await api.patch(f"/media/{item['id']}", payload)
    assert response.status == 400
    assert (await response.json())["code"] == code


async def test_patch_with_a_non_json_body_is_415(api):
    item = await api.upload_ok("a.png", png())
    response = await api.client.patch(f"/media/{item['id']}", data=b"caption=x",
                                      headers=api.headers(**{"Content-Type": "text/plain"}))
    assert response.status == 415


async def test_delete_removes_the_row_then_the_file(api):
    item = await api.upload_ok("a.png", png())
    path = api.root / api.user_id / item["id"]
    assert path.is_file()
    response = await api.delete(f"/media/{item['id']}")
    assert response.status == 204
    assert not path.exists()
    assert (await api.get(f"/media/{item['id']}")).status == 404
    assert (await api.delete(f"/media/{item['id']}")).status == 404


async def test_delete_of_an_item_whose_file_is_gone_still_succeeds(api):
    item = await api.upload_ok("a.png", png())
    (api.root / api.user_id / item["id"]).unlink()
    assert (await api.delete(f"/media/{item['id']}")).status == 204
