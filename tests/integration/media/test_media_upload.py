"""POST /media: each allowed type stored by content, with the file where the row says."""

from __future__ import annotations

import hashlib
import uuid

import pytest
from media_samples import (
    avi,
    file_part,
    form,
    gif,
    jpeg,
    mov,
    mp4,
    part,
    png,
    webp,
)

ALLOWED = [
    ("run.jpg", jpeg, "image/jpeg", (7, 5)),
    ("run.JPEG", jpeg, "image/jpeg", (7, 5)),
    ("route.png", png, "image/png", (7, 5)),
    ("loop.gif", gif, "image/gif", (7, 5)),
    ("pace.webp", webp, "image/webp", (7, 5)),
    ("finish.mp4", mp4, "video/mp4", None),
    ("start.mov", mov, "video/quicktime", None),
    ("old.avi", avi, "video/x-msvideo", None),
]


@pytest.mark.parametrize(("filename", "make", "mime", "dimensions"), ALLOWED)
async def test_each_allowed_type_is_stored_with_its_detected_type(api, filename, make, mime,
                                                                  dimensions):
    data = make()
    item = await api.upload_ok(filename, data)
    assert item["mimeType"] == mime
    assert item["filename"] == filename
    assert item["sizeBytes"] == len(data)
    assert item["sha256"] == hashlib.sha256(data).hexdigest()
    if dimensions:
        assert (item["width"], item["height"]) == dimensions
    else:
        assert "width" not in item
    stored = api.root / api.user_id / item["id"]
    assert stored.read_bytes() == data
    assert stored.stat().st_mode & 0o777 == 0o600
    assert list((api.root / ".tmp").iterdir()) == []


async def test_upload_carries_workout_id_and_caption(api):
    item = await api.upload_ok("a.jpg", jpeg(), part("workoutId", b"strava:12345"),
                               part("caption", "Sonnig am Fluss 🌞\nzweite Zeile".encode()))
    assert item["workoutId"] == "strava:12345"
    assert item["caption"] == "Sonnig am Fluss 🌞\nzweite Zeile"


async def test_declared_part_content_type_is_not_trusted(api):
    data = png()
    response = await api.post_form(form(file_part("x.png", data, content_type="text/html")))
    assert response.status == 201
    assert (await response.json())["items"][0]["mimeType"] == "image/png"


async def test_multi_file_request_reports_each_file_on_its_own(api, unchanged):
    body = form(
        file_part("one.jpg", jpeg()),
        file_part("evil.jpg", b"<html><script>alert(1)</script></html>"),
        file_part("two.png", png()),
        file_part("named-wrong.gif", png()),
    )
    response = await api.post_form(body)
    assert response.status == 201
    result = await response.json()
    assert [i["filename"] for i in result["items"]] == ["one.jpg", "two.png"]
    assert [(e["filename"], e["code"], e["status"]) for e in result["errors"]] == [
        ("evil.jpg", "unsupported_type", 415),
        ("named-wrong.gif", "extension_mismatch", 415),
    ]
    stored = sorted(p.name for p in (api.root / api.user_id).iterdir())
    assert stored == sorted(i["id"] for i in result["items"])


async def test_file_exactly_at_the_limit_is_stored(make_api):
    data = jpeg((64, 64))
    api = await make_api(MediaStorage__MaxFileSizeBytes=str(len(data)))
    item = await api.upload_ok("exact.jpg", data)
    assert item["sizeBytes"] == len(data)


async def test_twenty_files_in_one_request_are_accepted(api):
    body = form(*(file_part(f"p{i}.png", png((i + 1, 1))) for i in range(20)))
    response = await api.post_form(body)
    assert response.status == 201
    assert len((await response.json())["items"]) == 20


async def test_owner_directory_is_named_by_the_user_id_only(api):
    item = await api.upload_ok("../../etc/passwd.jpg", jpeg())
    assert item["filename"] == "passwd.jpg"
    assert (api.root / api.user_id / item["id"]).is_file()
    assert uuid.UUID(item["id"])
