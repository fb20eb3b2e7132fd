"""Every refused upload answers a clear 4xx and leaves the root and the table as they were."""

from __future__ import annotations

import pytest
from media_samples import (
    BOUNDARY,
    CONTENT_TYPE,
    ELF,
    HTML,
    SVG,
    file_part,
    form,
    jpeg,
    jpeg_then_html,
    jpeg_with_html_comment,
    part,
    png,
)

from tests.support import internal_headers


@pytest.fixture
async def api(make_api):
    """The app with one item already stored, so that "unchanged" compares real state."""
    api = await make_api()
    await api.upload_ok("already-there.png", png())
    return api


async def refused(api, unchanged, body: bytes, status: int, code: str,
                  content_type: str = CONTENT_TYPE) -> dict:
    async with unchanged(api):
        response = await api.post_form(body, content_type)
        problem = await response.json()
    assert response.status == status, problem
    assert response.content_type == "application/problem+json"
    assert problem["code"] == code, problem
    return problem


async def test_png_named_jpg_is_415(api, unchanged):
    problem = await refused(api, unchanged, form(file_part("photo.jpg", png())), 415,
                            "extension_mismatch")
    assert "image/png" in problem["error"]
    assert problem["errors"][0]["filename"] == "photo.jpg"


async def test_executable_named_jpg_is_415_naming_the_detected_type(api, unchanged):
    problem = await refused(api, unchanged, form(file_part("cat.jpg", ELF)), 415,
                            "unsupported_type")
    assert "application/x-executable" in problem["error"]


@pytest.mark.parametrize(("filename", "data", "detected"), [
    ("page.html", HTML, "text/html"),
    ("page.jpg", HTML, "text/html"),
    ("logo.svg", SVG, "image/svg+xml"),
    ("logo.png", SVG, "image/svg+xml"),
    ("run.sh", b"#!/bin/sh\nrm -rf /\n", "unrecognised content"),
])
async def test_markup_and_scripts_are_415(api, unchanged, filename, data, detected):
    problem = await refused(api, unchanged, form(file_part(filename, data)), 415,
                            "unsupported_type")
    assert detected in problem["error"]


@pytest.mark.parametrize("data", [jpeg_then_html(), jpeg_with_html_comment()],
                         ids=["jpeg-header-then-html", "decodable-jpeg-with-html-comment"])
async def test_jpeg_html_polyglot_is_415(api, unchanged, data):
    problem = await refused(api, unchanged, form(file_part("innocent.jpg", data)), 415,
                            "polyglot_content")
    assert "text/html" in problem["error"]


async def test_jpeg_with_xmp_metadata_is_not_mistaken_for_markup(api):
    xmp = (b'<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?>'
           b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf='
           b'"http://www.w3.org/1999/02/22-rdf-syntax-ns#"/></x:xmpmeta><?xpacket end="w"?>')
    data = jpeg(xmp=xmp)
    assert b"xmpmeta" in data
    await api.upload_ok("with-xmp.jpg", data)


async def test_empty_file_is_415(api, unchanged):
    await refused(api, unchanged, form(file_part("empty.jpg", b"")), 415, "empty_file")


async def test_request_without_file_part_is_400(api, unchanged):
    await refused(api, unchanged, form(part("caption", b"no file here")), 400, "no_file")


async def test_file_part_without_filename_is_400(api, unchanged):
    await refused(api, unchanged, form(part("file", jpeg())), 400, "missing_filename")


async def test_too_many_files_is_refused_and_earlier_files_are_removed(api, unchanged):
    body = form(*(file_part(f"p{i}.png", png((i + 1, 2))) for i in range(21)))
    await refused(api, unchanged, body, 413, "too_many_files")


async def test_one_byte_over_the_limit_is_413_and_leaves_no_file(make_api, unchanged):
    data = jpeg((64, 64))
    api = await make_api(MediaStorage__MaxFileSizeBytes=str(len(data) - 1))
    problem = await refused(api, unchanged, form(file_part("big.jpg", data)), 413,
                            "file_too_large")
    assert problem["limitBytes"] == len(data) - 1


async def test_chunked_body_over_the_limit_is_413(make_api, unchanged):
    api = await make_api(MediaStorage__MaxFileSizeBytes="100000")
    head = file_part("long.jpg", b"")[: -2]  # the part's headers, no data yet

    async def body():
        yield head
        yield jpeg()
        for _ in range(20):
            yield bytes(10_000)
        yield b"\r\n" + form()

    async with unchanged(api):
        response = await api.post_form(body())
        problem = await response.json()
    assert response.status == 413
    assert problem["code"] == "file_too_large"
    assert response.request_info.headers.get("Transfer-Encoding") == "chunked"


async def test_content_length_over_the_request_limit_is_413_before_reading(make_api,
                                                                         unchanged):
    api = await make_api(MediaStorage__MaxFileSizeBytes="1000",
                         MediaStorage__MaxFilesPerRequest="1")
    body = form(file_part("big.jpg", jpeg((300, 300)) + bytes(2_000_000)))
    await refused(api, unchanged, body, 413, "payload_too_large")


async def test_one_file_over_the_limit_does_not_stop_the_next_one(make_api):
    small = png()
    api = await make_api(MediaStorage__MaxFileSizeBytes=str(len(small) + 10))
    body = form(file_part("big.png", small + bytes(5000)), file_part("small.png", small))
    response = await api.post_form(body)
    result = await response.json()
    assert response.status == 201
    assert [i["filename"] for i in result["items"]] == ["small.png"]
    assert result["errors"][0]["code"] == "file_too_large"


async def test_quota_is_enforced_per_user(make_api, unchanged):
    data = png((20, 20))
    api = await make_api(MediaStorage__QuotaBytes=str(len(data) * 2 + 10))
    await api.upload_ok("one.png", data)
    await api.upload_ok("two.png", data)
    await refused(api, unchanged, form(file_part("three.png", data)), 413, "quota_exceeded")
    other = api.as_user()
    await other.upload_ok("theirs.png", data)


async def test_quota_stops_a_stream_that_grows_past_it(make_api, unchanged):
    small = png()
    api = await make_api(MediaStorage__QuotaBytes=str(len(small) * 3))
    await api.upload_ok("one.png", small)
    big = png((300, 300))
    assert len(big) > len(small) * 2
    await refused(api, unchanged, form(file_part("big.png", big)), 413, "quota_exceeded")


# --- hostile names -------------------------------------------------------------------

async def test_traversal_name_without_extension_is_refused(api, unchanged):
    await refused(api, unchanged, form(file_part("../../etc/passwd", jpeg())), 415,
                  "extension_mismatch")


@pytest.mark.parametrize(("disposition", "shown"), [
    (b'form-data; name="file"; filename="..\\\\..\\\\windows\\\\win.jpg"', "win.jpg"),
    (b"form-data; name=\"file\"; filename*=UTF-8''%2E%2E%2Fx%00y.jpg", "xy.jpg"),
    (b"form-data; name=\"file\"; filename*=UTF-8''run%E2%80%AE.jpg", "run.jpg"),
    (b"form-data; name=\"file\"; filename*=UTF-8''%0D%0A.hidden.jpg", "hidden.jpg"),
])
async def test_hostile_names_are_kept_only_as_clean_display_text(api, disposition, shown):
    response = await api.post_form(form(part("file", jpeg(), raw_disposition=disposition)))
    result = await response.json()
    assert response.status == 201, result
    item = result["items"][0]
    assert item["filename"] == shown
    assert (api.root / api.user_id / item["id"]).is_file()
    assert sorted(p.name for p in api.root.iterdir()) == sorted([".tmp", api.user_id])


async def test_bidi_override_cannot_disguise_an_extension(api, unchanged):
    # Shown as "invoiceexe.jpg" by a bidi-aware renderer; the real extension is .exe.
    name = "invoice\u202egpj.exe"
    disposition = ("form-data; name=\"file\"; filename*=UTF-8''"
                   + "invoice%E2%80%AEgpj.exe").encode()
    problem = await refused(api, unchanged, form(part("file", jpeg(), raw_disposition=disposition)),
                            415, "extension_mismatch")
    assert problem["errors"][0]["filename"] == name.replace("\u202e", "")


async def test_long_name_is_bounded(api):
    item = await api.upload_ok("x" * 3000 + ".jpg", jpeg())
    assert len(item["filename"]) == 255
    assert item["filename"].endswith(".jpg")


async def test_ten_thousand_character_name_is_400(api, unchanged):
    await refused(api, unchanged, form(file_part("y" * 10_000 + ".jpg", jpeg())), 400,
                  "malformed_multipart")


# --- malformed requests --------------------------------------------------------------

@pytest.mark.parametrize(("body", "content_type"), [
    (form(file_part("a.jpg", jpeg())), "multipart/form-data"),
    (form(file_part("a.jpg", jpeg())), "multipart/form-data; boundary=not-the-one"),
    (form(file_part("a.jpg", jpeg()))[:-40], CONTENT_TYPE),
    (b"--" + BOUNDARY.encode() + b"\r\nContent-Disposition: form-data; name=\"file\"; "
     b"filename=\"a.jpg\"\r\n", CONTENT_TYPE),
    (b"garbage without any boundary", CONTENT_TYPE),
    (form(part("file", form(file_part("inner.jpg", jpeg())), raw_disposition=b'form-data; '
               b'name="file"; filename="n.jpg"', content_type=CONTENT_TYPE.replace(
                   BOUNDARY, "inner"))), CONTENT_TYPE),
], ids=["no-boundary", "wrong-boundary", "truncated", "headers-only", "garbage", "nested"])
async def test_malformed_multipart_is_400(api, unchanged, body, content_type):
    await refused(api, unchanged, body, 400, "malformed_multipart", content_type)


@pytest.mark.parametrize("disposition", [
    b"form-data; name=\"file\"; filename*=bogus''%ZZ.jpg",
    b'form-data; name="file"; filename="a.jpg"; filename="b.jpg"',
    b"form-data; name=file; filename=a b.jpg",
    b";;;",
    b"form-data",
    b'attachment; filename="a.jpg"',
])
async def test_malformed_content_disposition_is_400(api, unchanged, disposition):
    await refused(api, unchanged, form(part("file", jpeg(), raw_disposition=disposition)), 400,
                  "malformed_multipart")


async def test_non_multipart_body_is_415(api, unchanged):
    await refused(api, unchanged, jpeg(), 415, "unsupported_media_type", "image/jpeg")


async def test_field_after_file_is_400_and_the_file_is_removed(api, unchanged):
    body = form(file_part("a.jpg", jpeg()), part("caption", b"late"))
    await refused(api, unchanged, body, 400, "field_after_file")


@pytest.mark.parametrize(("field", "value", "code"), [
    ("workoutId", b"../../etc", "invalid_workout_id"),
    ("workoutId", b"x" * 65, "invalid_workout_id"),
    ("workoutId", b"run 1", "invalid_workout_id"),
    ("caption", b"c" * 2001, "caption_too_long"),
    ("caption", b"nul\x00here", "invalid_caption"),
])
async def test_bad_fields_are_400(api, unchanged, field, value, code):
    await refused(api, unchanged, form(part(field, value), file_part("a.jpg", jpeg())), 400,
                  code)


async def test_caption_that_is_not_utf8_is_400(api, unchanged):
    await refused(api, unchanged, form(part("caption", b"\xff\xfe"), file_part("a.jpg", jpeg())),
                  400, "invalid_encoding")


async def test_oversized_field_is_413(api, unchanged):
    await refused(api, unchanged, form(part("caption", b"c" * 100_000),
                                       file_part("a.jpg", jpeg())), 413, "field_too_large")


async def test_upload_without_internal_identity_is_401(api, unchanged):
    async with unchanged(api):
        response = await api.client.post("/media", data=form(file_part("a.jpg", jpeg())),
                                         headers={"Content-Type": CONTENT_TYPE})
    assert response.status == 401


async def test_anonymous_upload_is_401(api, unchanged):
    headers = {**internal_headers(api.internal_key, "media", user_id=None),
               "Content-Type": CONTENT_TYPE}
    async with unchanged(api):
        response = await api.client.post("/media", data=form(file_part("a.jpg", jpeg())),
                                         headers=headers)
    assert response.status == 401


async def test_identity_for_another_service_is_401(api, unchanged):
    headers = {**internal_headers(api.internal_key, "auth", user_id=api.user_id),
               "Content-Type": CONTENT_TYPE}
    async with unchanged(api):
        response = await api.client.post("/media", data=form(file_part("a.jpg", jpeg())),
                                         headers=headers)
    assert response.status == 401
