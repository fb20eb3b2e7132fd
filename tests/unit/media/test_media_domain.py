"""The pure media rules: names, the allow-list, markup, ranges, ETags, cursors."""

from __future__ import annotations

import io
import random
import struct
import uuid
from datetime import UTC, datetime

import pytest
from PIL import Image

from services.media import domain
from shared.errors import RangeNotSatisfiableError, UnsupportedMediaTypeError, ValidationError


def image(fmt: str, size=(13, 9), **save) -> bytes:
    buffer = io.BytesIO()
    Image.new("P" if fmt == "GIF" else "RGB", size).save(buffer, fmt, **save)
    return buffer.getvalue()


# --- names ---------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "clean"), [
    ("run.jpg", "run.jpg"),
    ("../../etc/passwd", "passwd"),
    ("..\\..\\windows\\system32\\x.png", "x.png"),
    ("/absolute/path/a.gif", "a.gif"),
    ("a\x00b.jpg", "ab.jpg"),
    ("new\nline\r.jpg", "newline.jpg"),
    ("invoice\u202egpj.exe", "invoicegpj.exe"),
    ("\u200bzero\u200dwidth.png", "zerowidth.png"),
    ("...hidden.jpg", "hidden.jpg"),
    (". . .jpg", "jpg"),
    ("   spaced.jpg  ", "spaced.jpg"),
    ("Läufer 🏃.jpg", "Läufer 🏃.jpg"),
    ("e\u0301.jpg", "é.jpg"),
    ("", ""),
    (None, ""),
    ("dir/", ""),
    ("..", ""),
])
def test_sanitize_filename(raw, clean):
    assert domain.sanitize_filename(raw) == clean


def test_sanitize_filename_bounds_the_length_and_keeps_the_extension():
    clean = domain.sanitize_filename("a" * 10_000 + ".jpeg")
    assert len(clean) == domain.MAX_FILENAME_LENGTH
    assert clean.endswith(".jpeg")
    no_extension = domain.sanitize_filename("b" * 10_000)
    assert no_extension == "b" * domain.MAX_FILENAME_LENGTH


@pytest.mark.parametrize(("name", "extension"), [
    ("a.JPG", "jpg"), ("a.tar.gz", "gz"), ("noext", ""), ("trailing.", ""), (".jpg", "")])
def test_extension_of(name, extension):
    assert domain.extension_of(name) == extension


# --- content -------------------------------------------------------------------------

@pytest.mark.parametrize(("fmt", "name", "mime"), [
    ("JPEG", "a.jpg", "image/jpeg"), ("JPEG", "a.jpeg", "image/jpeg"),
    ("PNG", "a.png", "image/png"), ("GIF", "a.gif", "image/gif"),
    ("WEBP", "a.webp", "image/webp"),
])
def test_allowed_images_pass(fmt, name, mime):
    assert domain.check_content(image(fmt)[:domain.SNIFF_BYTES], name).mime == mime


def test_extension_must_agree_with_the_content():
    with pytest.raises(UnsupportedMediaTypeError) as caught:
        domain.check_content(image("PNG"), "a.jpg")
    assert caught.value.code == "extension_mismatch"
    assert "image/png" in caught.value.message


@pytest.mark.parametrize(("head", "named"), [
    (b"PK\x03\x04" + bytes(40), "application/zip"),
    (b"%PDF-1.7\n" + bytes(40), "application/pdf"),
    (b"MZ" + bytes(100), "application/x-msdownload"),
    (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml"),
    (b"<html><body>hi</body></html>", "text/html"),
    (b"plain words", "unrecognised content"),
])
def test_disallowed_content_is_415_naming_what_was_found(head, named):
    with pytest.raises(UnsupportedMediaTypeError) as caught:
        domain.check_content(head, "a.jpg")
    assert caught.value.status == 415
    assert named in caught.value.message


def test_empty_content_is_415():
    with pytest.raises(UnsupportedMediaTypeError) as caught:
        domain.check_content(b"", "a.jpg")
    assert caught.value.code == "empty_file"


@pytest.mark.parametrize("markup", [b"<script>", b"<SCRIPT src=x>", b"<!DOCTYPE html>",
                                    b"<html>", b"<iframe/src=x>", b"<svg onload=x>",
                                    b"<!-- c -->", b"<body\t>", b"<img src=x onerror=y>"])
def test_image_carrying_markup_in_its_first_bytes_is_a_polyglot(markup):
    head = image("JPEG")[:20] + markup
    with pytest.raises(UnsupportedMediaTypeError) as caught:
        domain.check_content(head, "a.jpg")
    assert caught.value.code == "polyglot_content"


@pytest.mark.parametrize("text", [b"<x:xmpmeta xmlns:x='adobe:ns:meta/'>", b"<rdf:RDF>",
                                  b"<?xpacket begin=''?>", b"a < b > c", b"<scripts",
                                  b"<htmlx>"])
def test_ordinary_metadata_is_not_taken_for_markup(text):
    assert domain.markup_in(image("JPEG")[:20] + text) is None


def test_random_binary_data_does_not_look_like_markup():
    generator = random.Random(20261128)
    for _ in range(2000):
        assert domain.markup_in(generator.randbytes(domain.SNIFF_BYTES)) is None


def test_markup_past_the_sniff_window_is_not_searched():
    head = image("JPEG")[:20] + bytes(domain.SNIFF_BYTES) + b"<script>"
    assert domain.markup_in(head) is None


# --- fields --------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["strava:123", "a", "A-b_c.d:e", "x" * 64])
def test_valid_workout_ids(value):
    assert domain.validate_workout_id(value) == value


@pytest.mark.parametrize("value", ["x" * 65, "a b", "a/b", "../x", "ü", "a\x00", "<s>"])
def test_invalid_workout_ids(value):
    with pytest.raises(ValidationError):
        domain.validate_workout_id(value)


def test_empty_workout_id_and_caption_mean_none():
    assert domain.validate_workout_id("") is None
    assert domain.validate_caption("") is None


@pytest.mark.parametrize(("value", "ok"), [
    ("line one\nline two\ttab\r\n", True), ("x" * 2000, True), ("🏃" * 2000, True),
    ("x" * 2001, False), ("nul\x00", False), ("bell\x07", False), ("del\x7f", False),
])
def test_captions(value, ok):
    if ok:
        assert domain.validate_caption(value) == value
    else:
        with pytest.raises(ValidationError):
            domain.validate_caption(value)


# --- dimensions ----------------------------------------------------------------------

@pytest.mark.parametrize(("fmt", "mime", "save"), [
    ("PNG", "image/png", {}), ("GIF", "image/gif", {}), ("JPEG", "image/jpeg", {}),
    ("JPEG", "image/jpeg", {"progressive": True}),
    ("WEBP", "image/webp", {"lossless": False}), ("WEBP", "image/webp", {"lossless": True}),
    ("WEBP", "image/webp", {"exif": b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x00"}),
])
def test_image_dimensions_from_the_header(fmt, mime, save):
    data = image(fmt, (123, 45), **save)
    assert domain.image_dimensions(mime, data[:domain.SNIFF_BYTES]) == (123, 45)


def test_dimensions_beyond_the_window_are_unknown():
    big_segment = b"\xff\xe1" + struct.pack(">H", 20000) + bytes(19998)
    data = image("JPEG", (10, 10))
    assert domain.image_dimensions("image/jpeg", (data[:2] + big_segment + data[2:])[:8192]) \
        is None
    assert domain.image_dimensions("video/mp4", b"\x00" * 64) is None


# --- serving -------------------------------------------------------------------------

@pytest.mark.parametrize(("header", "expected"), [
    ("bytes=0-0", (0, 0)), ("bytes=0-99", (0, 99)), ("bytes=10-", (10, 99)),
    ("bytes=-10", (90, 99)), ("bytes=-1000", (0, 99)), ("bytes=50-5000", (50, 99)),
    (" bytes=1-2 ", (1, 2)),
    (None, None), ("bytes=5-1", None), ("bytes=-", None), ("bytes=0-1,3-4", None),
    ("pages=1-2", None), ("bytes=a-b", None), ("bytes=" + "1" * 20 + "-", None),
])
def test_parse_range(header, expected):
    result = domain.parse_range(header, 100)
    assert (None if result is None else (result.start, result.end)) == expected


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=100-200", "bytes=-0"])
def test_unsatisfiable_ranges(header):
    with pytest.raises(RangeNotSatisfiableError) as caught:
        domain.parse_range(header, 100)
    assert caught.value.headers["Content-Range"] == "bytes */100"


def test_etag_matching():
    etag = domain.etag_for("ab" * 32)
    assert etag == '"' + "ab" * 32 + '"'
    assert domain.none_match(etag, etag)
    assert domain.none_match(f'W/{etag}', etag)
    assert domain.none_match(f'"x", {etag}', etag)
    assert domain.none_match("*", etag)
    assert not domain.none_match('"x"', etag)
    assert not domain.none_match(None, etag)
    assert domain.if_range_allows(None, etag)
    assert domain.if_range_allows(etag, etag)
    assert not domain.if_range_allows(f"W/{etag}", etag)
    assert not domain.if_range_allows("Sat, 28 Nov 2026 04:00:00 GMT", etag)


@pytest.mark.parametrize(("name", "mime", "expected"), [
    ("run.jpg", "image/jpeg", "inline; filename=\"run.jpg\"; filename*=UTF-8''run.jpg"),
    ('a"b;c\\d%.png', "image/png",
     "inline; filename=\"a_b_c_d_.png\"; filename*=UTF-8''a%22b%3Bc%5Cd%25.png"),
    ("täst.gif", "image/gif", "inline; filename=\"t_st.gif\"; filename*=UTF-8''t%C3%A4st.gif"),
    ("track.gpx", "application/gpx+xml",
     "attachment; filename=\"track.gpx\"; filename*=UTF-8''track.gpx"),
])
def test_content_disposition(name, mime, expected):
    assert domain.content_disposition(name, mime) == expected


# --- paging and ids ------------------------------------------------------------------

def test_cursor_round_trip_is_opaque():
    cursor = domain.Cursor(datetime(2026, 11, 28, 4, 5, 6, 789012, tzinfo=UTC), uuid.uuid4())
    encoded = domain.encode_cursor(cursor)
    assert "2026" not in encoded
    assert domain.decode_cursor(encoded) == cursor


@pytest.mark.parametrize("value", ["", "!!!", "e30", "W10", "bnVsbA",
                                   "eyJjIjoiMjAyNi0xMS0yOFQwMDowMDowMCIsImkiOiJ4In0",
                                   "eyJjIjoxLCJpIjoyfQ", "A" * 300])
def test_bad_cursors_are_400(value):
    with pytest.raises(ValidationError) as caught:
        domain.decode_cursor(value)
    assert caught.value.code == "invalid_cursor"


@pytest.mark.parametrize(("value", "expected"), [(None, 50), ("", 50), ("1", 1), ("200", 200)])
def test_parse_limit(value, expected):
    assert domain.parse_limit(value) == expected


@pytest.mark.parametrize("value", ["0", "201", "-1", "1.5", "abc", "٣", "9" * 5000])
def test_bad_limits_are_400(value):
    with pytest.raises(ValidationError):
        domain.parse_limit(value)


def test_parse_media_id():
    media_id = uuid.uuid4()
    assert domain.parse_media_id(str(media_id)) == media_id
    for bad in ["", "x", str(media_id)[:-1] + "g", "{" + str(media_id) + "}", "1" * 5000,
                str(media_id).replace("-", "")]:
        assert domain.parse_media_id(bad) is None
