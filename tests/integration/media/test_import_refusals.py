"""Hostile archives and hostile content: each refused with its error, nothing left behind."""

from __future__ import annotations

import io
import zipfile

import pytest
from import_support import (
    clean_import_tables,  # noqa: F401 - a fixture, used through pytestmark
    files_under,
    import_done,
    post_import,
    rows,
    start_import,
    summary_counts,
    wait_for,
    world,
)

from tests.media_archives import (
    BILLION_LAUGHS,
    HTML_PAGE,
    XXE_PASSWD,
    Row,
    activities_csv,
    gpx,
    jpeg,
    noise_jpeg,
    overlap_bomb,
    ratio_bomb,
    symlink_zip,
    with_declared_size,
    with_flag_bit,
    zip_bytes,
)

pytestmark = pytest.mark.usefixtures("clean_import_tables")


def export_with(*extra: tuple[str, bytes], rows_: list[Row] | None = None) -> bytes:
    return zip_bytes([("activities.csv", activities_csv(rows_ or [])), *extra])


async def refused_at_upload(api, data: bytes, status: int, code: str,
                            filename: str = "export.zip") -> dict:
    before = await world(api)
    response = await post_import(api, data, filename)
    body = await response.json()
    assert response.status == status, body
    assert body["code"] == code, body
    assert response.headers["Content-Type"].startswith("application/problem+json")
    assert await world(api) == before, "a refused archive left rows or files behind"
    return body


@pytest.mark.parametrize("name", ["../../evil.jpg", "/etc/cron.d/evil", "..\\..\\evil.jpg",
                                  "media/../../evil.jpg", "C:/Windows/evil.jpg"])
async def test_zip_slip_entry_names_refuse_the_archive(api, name: str) -> None:
    body = await refused_at_upload(api, export_with((name, jpeg())), 400, "unsafe_entry_name")
    assert "unsafe" in body["error"]
    assert not (api.root.parent / "evil.jpg").exists()


async def test_symlink_entry_refuses_the_archive(api) -> None:
    body = await refused_at_upload(api, symlink_zip(), 400, "special_file_entry")
    assert body["entry"] == "media/link.jpg"


async def test_encrypted_entry_refuses_the_archive(api) -> None:
    data = with_flag_bit(export_with(("media/a.jpg", jpeg())), "media/a.jpg", 0x1)
    await refused_at_upload(api, data, 400, "encrypted_entry")


async def test_a_file_that_is_not_a_zip_is_415(api) -> None:
    body = await refused_at_upload(api, HTML_PAGE * 20, 415, "not_a_zip")
    assert "ZIP" in body["error"]
    await refused_at_upload(api, jpeg(), 415, "not_a_zip")
    await refused_at_upload(api, b"", 415, "empty_file")


async def test_a_truncated_zip_is_refused(api) -> None:
    data = export_with(("media/a.jpg", jpeg()), ("activities/1.gpx", gpx(200)))
    await refused_at_upload(api, data[: len(data) * 2 // 3], 400, "corrupt_archive")


async def test_too_many_entries_are_refused(make_api) -> None:
    api = await make_api(Import__MaxEntries="5")
    data = export_with(*[(f"media/{index}.jpg", jpeg()) for index in range(5)])
    await refused_at_upload(api, data, 400, "too_many_entries")


async def test_a_high_ratio_bomb_is_refused(api) -> None:
    body = await refused_at_upload(api, ratio_bomb(), 400, "compression_ratio_exceeded")
    assert body["entry"] == "media/bomb.jpg"


async def test_an_overlapping_entries_bomb_is_refused(api) -> None:
    await refused_at_upload(api, overlap_bomb(), 400, "overlapping_entries")


async def test_an_archive_over_the_size_limit_is_413_and_leaves_nothing(make_api) -> None:
    api = await make_api(Import__MaxFileSizeBytes="20000")
    data = export_with(("media/a.jpg", noise_jpeg()), ("media/b.jpg", noise_jpeg(seed=2)))
    assert len(data) > 20000
    body = await refused_at_upload(api, data, 413, "file_too_large")
    assert "20000" in body["error"]


@pytest.mark.parametrize("form", ["no file", "two files", "other field"])
async def test_the_form_must_hold_exactly_one_file_part(api, form: str) -> None:
    import aiohttp

    data = aiohttp.FormData(default_to_multipart=True)
    if form != "no file":
        data.add_field("file", export_with(), filename="a.zip")
    if form == "two files":
        data.add_field("file", export_with(), filename="b.zip")
    if form == "other field":
        data.add_field("note", "hello")
    before = await world(api)
    response = await api.client.post("/imports", data=data, headers=api.headers())
    assert response.status == 400
    assert (await response.json())["code"] in {"no_file", "unexpected_part"}
    assert await world(api) == before


async def test_an_import_needs_multipart(api) -> None:
    response = await api.client.post("/imports", data=export_with(),
                                     headers=api.headers(**{"Content-Type": "application/zip"}))
    assert response.status == 415


async def test_an_archive_with_neither_csv_nor_manifest_fails(api) -> None:
    state = await wait_for(api, await start_import(api, zip_bytes([("media/a.jpg", jpeg())])))
    assert state["status"] == "failed"
    assert state["summary"]["errors"][0]["code"] == "not_an_export"
    assert await rows(api, "media") == []


async def test_csv_paths_outside_the_archive_folders_are_not_followed(api) -> None:
    secret = b"Name\nsecret\n"
    rows_ = [
        Row("1", filename="../../../../etc/passwd"),
        Row("2", filename="activities/../profile.csv"),
        Row("3", filename="/etc/passwd"),
        Row("4", filename="activities\\..\\profile.csv"),
        Row("5", filename="activities/5.gpx", media=["../media/x.jpg", "/etc/passwd",
                                                     "profile.csv", "media/../profile.csv"]),
    ]
    state = await import_done(api, export_with(("profile.csv", secret),
                                               ("activities/5.gpx", gpx()), rows_=rows_))
    counts = summary_counts(state)
    assert counts["invalid"] == 8
    assert counts["activitiesImported"] == 1
    assert {e["code"] for e in state["summary"]["errors"]} == {"invalid_path"}
    assert [r["strava_id"] for r in await rows(api, "activities")] == ["5"]
    assert await rows(api, "media") == []
    for name, _ in files_under(api.root).items():
        assert name.startswith((".activities/", ".tmp")), name


@pytest.mark.parametrize(("content", "code"), [(BILLION_LAUGHS, "unsafe_xml"),
                                               (XXE_PASSWD, "unsafe_xml")])
async def test_hostile_gpx_is_refused_and_not_stored(api, content: bytes, code: str) -> None:
    rows_ = [Row("1", filename="activities/1.gpx", media=["media/a.jpg"]), Row("2")]
    state = await import_done(api, export_with(("activities/1.gpx", content),
                                               ("media/a.jpg", jpeg()), rows_=rows_))
    counts = summary_counts(state)
    assert counts["invalid"] == 1
    assert counts["activitiesImported"] == 1  # the second row, without a file
    assert counts["mediaImported"] == 0  # the refused activity's photo is not taken
    (error,) = state["summary"]["errors"]
    assert (error["entry"], error["code"]) == ("activities/1.gpx", code)
    assert "root:" not in str(state)
    assert [r["strava_id"] for r in await rows(api, "activities")] == ["2"]
    assert not [n for n in files_under(api.root) if not n.startswith(".tmp")]


async def test_an_activity_file_that_is_not_what_it_claims_is_invalid(api) -> None:
    rows_ = [Row("1", filename="activities/1.fit"), Row("2", filename="activities/2.gpx"),
             Row("3", filename="activities/3.fit.gz"), Row("4", filename="activities/4.zip")]
    state = await import_done(api, export_with(
        ("activities/1.fit", gpx()), ("activities/2.gpx", HTML_PAGE),
        ("activities/3.fit.gz", b"\x1f\x8b not really gzip"),
        ("activities/4.zip", zip_bytes([("a", b"nested")])), rows_=rows_))
    assert summary_counts(state)["invalid"] == 4
    codes = sorted((e["entry"], e["code"]) for e in state["summary"]["errors"])
    assert codes == [("activities/1.fit", "invalid_activity_file"),
                     ("activities/2.gpx", "unsafe_xml"),
                     ("activities/3.fit.gz", "invalid_activity_file"),
                     ("activities/4.zip", "unsupported_activity_format")]
    assert await rows(api, "activities") == []


async def test_media_go_through_the_upload_checks(api) -> None:
    rows_ = [Row("1", media=["media/page.jpg", "media/photo.png", "media/archive.jpg",
                             "media/ok.jpg"])]
    state = await import_done(api, export_with(
        ("media/page.jpg", HTML_PAGE), ("media/photo.png", jpeg()),
        ("media/archive.jpg", zip_bytes([("a", b"b")])), ("media/ok.jpg", jpeg()),
        rows_=rows_))
    counts = summary_counts(state)
    assert counts["mediaImported"] == 1
    assert counts["invalid"] == 3
    errors = {e["entry"]: e["code"] for e in state["summary"]["errors"]}
    assert errors == {"media/page.jpg": "unsupported_type",
                      "media/photo.png": "extension_mismatch",
                      "media/archive.jpg": "unsupported_type"}
    (item,) = await rows(api, "media")
    assert item["mime_type"] == "image/jpeg"
    assert item["workout_id"] == "strava:1"


async def test_media_over_the_upload_limit_are_refused(make_api) -> None:
    api = await make_api(MediaStorage__MaxFileSizeBytes="1000")
    big = noise_jpeg(size=(40, 40))
    assert len(big) > 1000
    state = await import_done(api, export_with(("media/big.jpg", big),
                                               rows_=[Row("1", media=["media/big.jpg"])]))
    assert [e["code"] for e in state["summary"]["errors"]] == ["file_too_large"]
    assert await rows(api, "media") == []


async def test_an_archive_failing_while_inflating_is_refused_as_a_whole(api) -> None:
    # The headers pass every check; the bytes do not match them, which only shows while
    # inflating, after the first activity and photo were stored. They are removed again.
    good = export_with(
        ("activities/1.gpx", gpx()), ("media/a.jpg", jpeg()),
        ("media/b.jpg", jpeg((1, 1, 1), size=(64, 64))),
        rows_=[Row("1", filename="activities/1.gpx", media=["media/a.jpg", "media/b.jpg"])])
    with zipfile.ZipFile(io.BytesIO(good)) as archive:
        size = archive.getinfo("media/b.jpg").file_size
    data = with_declared_size(good, "media/b.jpg", size - 100)
    state = await wait_for(api, await start_import(api, data))
    assert state["status"] == "failed"
    (error,) = state["summary"]["errors"]
    assert (error["entry"], error["code"]) == ("media/b.jpg", "corrupt_entry")
    assert state["summary"]["activitiesImported"] == 0
    assert state["summary"]["mediaImported"] == 0
    assert await rows(api, "media") == []
    assert await rows(api, "activities") == []
    assert files_under(api.root) == {}


async def test_too_many_imports_at_once_are_refused(make_api) -> None:
    api = await make_api(Import__MaxActivePerUser="1", Import__Workers="1")
    big = export_with(*[(f"media/{i}.jpg", jpeg((i, i, i))) for i in range(40)],
                      rows_=[Row("1", media=[f"media/{i}.jpg" for i in range(40)])])
    first = await start_import(api, big)
    response = await post_import(api, export_with())
    if response.status == 202:
        # The first finished in the meantime; the limit only counts unfinished imports.
        assert (await wait_for(api, first))["status"] == "done"
        return
    assert response.status == 409
    assert (await response.json())["code"] == "too_many_imports"


async def test_a_client_disconnect_mid_upload_leaves_nothing(api) -> None:
    import asyncio
    import time

    from media_samples import CONTENT_TYPE, file_part

    before = await world(api)
    server = api.client.server
    _reader, writer = await asyncio.open_connection(server.host, server.port)
    body = file_part("export.zip", b"")[:-2] + export_with(("media/a.jpg", noise_jpeg()))
    headers = {**api.headers(), "Content-Type": CONTENT_TYPE, "Content-Length": "50000000",
               "Host": f"{server.host}:{server.port}"}
    head = "POST /imports HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    temp = api.root / ".tmp"
    try:
        writer.write(head.encode() + b"\r\n" + body)
        await writer.drain()
        deadline = time.monotonic() + 10
        while not (temp.is_dir() and any(temp.iterdir())):
            assert time.monotonic() < deadline, "the upload never got under way"
            writer.write(bytes(16_384))
            await writer.drain()
            await asyncio.sleep(0.005)
    finally:
        writer.transport.abort()
    deadline = time.monotonic() + 10
    while await world(api) != before:
        assert time.monotonic() < deadline, "a cut upload left something behind"
        await asyncio.sleep(0.05)
