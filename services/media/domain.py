"""The media rules, free of I/O: the allow-list, content checks, names, ranges, cursors.

How content is judged: ``filetype`` reads the magic bytes of the first
``SNIFF_BYTES`` of the stream; the type it finds must be on ``ALLOWED_TYPES`` and the
file name's extension must be one of that type's. The same window is then searched for
HTML and SVG markup, which catches the polyglot that starts with a valid image header
and carries a page behind it: browsers decide whether bytes are HTML from the first
few hundred bytes, and this window is far wider. Markup placed deeper than the window
cannot be turned into a page either, because content is only ever served with the
type recorded here, ``X-Content-Type-Options: nosniff`` and a sandboxing CSP.
Whole-file decoding is deliberately not used: decoding hostile images is itself an
attack surface and would cost CPU per upload.
"""

from __future__ import annotations

import re
import struct
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote
from uuid import UUID

import filetype

from shared import cursors as shared_cursors
from shared.errors import RangeNotSatisfiableError, UnsupportedMediaTypeError, ValidationError
from shared.web import page_limit

SNIFF_BYTES = 8192
MAX_FILENAME_LENGTH = 255
MAX_EXTENSION_LENGTH = 16
MAX_CAPTION_LENGTH = 2000
MAX_WORKOUT_ID_LENGTH = 64
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200


@dataclass(frozen=True, slots=True)
class MediaType:
    mime: str
    label: str
    extensions: frozenset[str]
    kind: str  # "image" or "video"


ALLOWED_TYPES: dict[str, MediaType] = {
    media_type.mime: media_type
    for media_type in (
        MediaType("image/jpeg", "JPEG", frozenset({"jpg", "jpeg"}), "image"),
        MediaType("image/png", "PNG", frozenset({"png"}), "image"),
        MediaType("image/gif", "GIF", frozenset({"gif"}), "image"),
        MediaType("image/webp", "WebP", frozenset({"webp"}), "image"),
        MediaType("video/mp4", "MP4", frozenset({"mp4"}), "video"),
        MediaType("video/quicktime", "QuickTime", frozenset({"mov"}), "video"),
        MediaType("video/x-msvideo", "AVI", frozenset({"avi"}), "video"),
    )
}
ALLOWED_LABELS = ", ".join(t.label for t in ALLOWED_TYPES.values())

# Types a browser may show inline; anything else is served as an attachment.
INLINE_TYPES = frozenset(ALLOWED_TYPES)

# Tags from the HTML sniffing algorithm (WHATWG MIME Sniffing 7.1) plus SVG and the
# embedding elements, each followed by a byte that ends a tag name. One-letter tags are
# left out: in compressed image data they would turn up by chance.
_MARKUP = re.compile(
    rb"<(?:(?P<svg>svg)|!doctype|html|head|body|script|iframe|object|embed|style|title"
    rb"|table|div|font|img|meta|link|form|base)(?=[\s/>])|<!--",
    re.IGNORECASE,
)

_WORKOUT_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
# Control characters other than tab, newline and carriage return have no place in text a
# person typed, and PostgreSQL text cannot hold NUL at all.
_CAPTION_FORBIDDEN = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# Unicode categories removed from display names: controls, format characters (bidi
# overrides, zero-width marks), surrogates, private use, unassigned, line separators.
_NAME_DROPPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def sanitize_filename(raw: str | None, max_length: int = MAX_FILENAME_LENGTH) -> str:
    """The client's file name made safe to show: never used to build a path.

    Keeps only the last path component (either separator), drops control, format and
    bidi characters, leading dots and surrounding blanks, and bounds the length while
    keeping the extension. May return an empty string.
    """
    text = unicodedata.normalize("NFC", raw or "")
    text = text.replace("\\", "/").rsplit("/", 1)[-1]
    text = "".join(ch for ch in text if unicodedata.category(ch) not in _NAME_DROPPED_CATEGORIES)
    text = text.strip().lstrip(". ").strip()
    if len(text) > max_length:
        stem, dot, extension = text.rpartition(".")
        if dot and stem and 0 < len(extension) <= MAX_EXTENSION_LENGTH:
            text = stem[: max_length - len(extension) - 1].rstrip() + "." + extension
        else:
            text = text[:max_length]
    return text


def extension_of(filename: str) -> str:
    stem, dot, extension = filename.rpartition(".")
    if not dot or not stem:
        return ""
    return extension.lower()


def markup_in(head: bytes) -> str | None:
    """The MIME type of markup found in ``head`` ("text/html" or "image/svg+xml"), if any."""
    match = _MARKUP.search(head[:SNIFF_BYTES])
    if match is None:
        return None
    return "image/svg+xml" if match.group("svg") else "text/html"


def detect_type(head: bytes) -> str | None:
    """The MIME type the magic bytes say, or None when unrecognised."""
    kind = filetype.guess(head[:SNIFF_BYTES]) if head else None
    return kind.mime if kind is not None else None


def check_content(head: bytes, filename: str) -> MediaType:
    """The allowed type of a file from its first bytes and its (sanitised) name.

    Raises UnsupportedMediaTypeError (415) naming the detected type otherwise.
    """
    if not head:
        raise UnsupportedMediaTypeError("The file is empty.", code="empty_file")
    detected = detect_type(head)
    media_type = ALLOWED_TYPES.get(detected or "")
    if media_type is None:
        shown = detected or markup_in(head) or "unrecognised content"
        raise UnsupportedMediaTypeError(
            f"The file's content is {shown}, which is not allowed; "
            f"allowed types are {ALLOWED_LABELS}.",
            code="unsupported_type", detectedType=detected or markup_in(head),
        )
    extension = extension_of(filename)
    if extension not in media_type.extensions:
        expected = " or ".join(sorted(f".{e}" for e in media_type.extensions))
        shown_extension = f"'.{extension}'" if extension else "no extension"
        raise UnsupportedMediaTypeError(
            f"The file's content is {media_type.mime} but its name has {shown_extension}; "
            f"expected {expected}.",
            code="extension_mismatch", detectedType=media_type.mime,
        )
    markup = markup_in(head)
    if markup is not None:
        raise UnsupportedMediaTypeError(
            f"The file starts as {media_type.mime} but carries {markup} markup; "
            "refused as a polyglot.",
            code="polyglot_content", detectedType=markup,
        )
    return media_type


def validate_workout_id(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    if _WORKOUT_ID.fullmatch(value) is None:
        raise ValidationError(
            "workoutId",
            f"'workoutId' must be 1 to {MAX_WORKOUT_ID_LENGTH} characters of "
            "letters, digits, '.', '_', ':' and '-'.",
            code="invalid_workout_id",
        )
    return value


def validate_caption(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    if len(value) > MAX_CAPTION_LENGTH:
        raise ValidationError("caption",
                              f"'caption' must be at most {MAX_CAPTION_LENGTH} characters.",
                              code="caption_too_long")
    if _CAPTION_FORBIDDEN.search(value):
        raise ValidationError("caption", "'caption' must not contain control characters.",
                              code="invalid_caption")
    return value


# --- image dimensions, read from the header window when it holds them ---------------

_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7,
                       0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xDA)})


def _jpeg_dimensions(head: bytes) -> tuple[int, int] | None:
    index = 2
    while index + 9 <= len(head):
        if head[index] != 0xFF:
            return None
        marker = head[index + 1]
        if marker == 0xFF:
            index += 1
            continue
        if marker in _JPEG_STANDALONE:
            index += 2
            continue
        if marker in _JPEG_SOF:
            height, width = struct.unpack(">HH", head[index + 5:index + 9])
            return width, height
        (length,) = struct.unpack(">H", head[index + 2:index + 4])
        index += 2 + length
    return None


def _webp_dimensions(head: bytes) -> tuple[int, int] | None:
    chunk = head[12:16]
    if chunk == b"VP8 " and len(head) >= 30 and head[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", head[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and len(head) >= 25 and head[20] == 0x2F:
        b0, b1, b2, b3 = head[21:25]
        width = 1 + (b0 | (b1 & 0x3F) << 8)
        height = 1 + (b1 >> 6 | b2 << 2 | (b3 & 0x0F) << 10)
        return width, height
    if chunk == b"VP8X" and len(head) >= 30:
        width = 1 + int.from_bytes(head[24:27], "little")
        height = 1 + int.from_bytes(head[27:30], "little")
        return width, height
    return None


def image_dimensions(mime: str, head: bytes) -> tuple[int, int] | None:
    """(width, height) when the header window holds them; None for video or when not."""
    if mime == "image/png" and len(head) >= 24 and head[12:16] == b"IHDR":
        return struct.unpack(">II", head[16:24])
    if mime == "image/gif" and len(head) >= 10:
        return struct.unpack("<HH", head[6:10])
    if mime == "image/webp":
        return _webp_dimensions(head)
    if mime == "image/jpeg":
        return _jpeg_dimensions(head)
    return None


# --- serving -------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ByteRange:
    start: int
    end: int  # inclusive

    @property
    def length(self) -> int:
        return self.end - self.start + 1


_RANGE = re.compile(r"bytes=(\d{0,19})-(\d{0,19})")


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The single byte range asked for, or None to serve the whole content.

    Malformed headers and multi-range requests are ignored (RFC 9110 14.2 lets a server
    answer them with the whole content); a well-formed range that starts past the end is
    416.
    """
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if first == "" and last == "":
        return None
    if first == "":
        suffix = int(last)
        if suffix == 0:
            raise RangeNotSatisfiableError(headers={"Content-Range": f"bytes */{size}"})
        return ByteRange(max(0, size - suffix), size - 1)
    start = int(first)
    if last and int(last) < start:
        return None
    end = int(last) if last else size - 1
    if start >= size:
        raise RangeNotSatisfiableError(headers={"Content-Range": f"bytes */{size}"})
    return ByteRange(start, min(end, size - 1))


def etag_for(sha256: str) -> str:
    return f'"{sha256}"'


def _opaque_tags(header: str) -> list[str]:
    tags = []
    for item in header.split(","):
        tag = item.strip()
        if tag.startswith("W/"):
            tag = tag[2:]
        if tag:
            tags.append(tag)
    return tags


def none_match(header: str | None, etag: str) -> bool:
    """True when If-None-Match names this ETag (weak comparison, RFC 9110 13.1.2)."""
    if header is None:
        return False
    if header.strip() == "*":
        return True
    return etag in _opaque_tags(header)


def if_range_allows(header: str | None, etag: str) -> bool:
    """Whether a Range may be honoured given If-Range (strong comparison; dates ignored)."""
    if header is None:
        return True
    value = header.strip()
    return not value.startswith("W/") and value == etag


def _ascii_fallback(filename: str) -> str:
    cleaned = "".join(ch if 0x20 <= ord(ch) < 0x7F and ch not in '"\\;%' else "_"
                      for ch in filename)
    return cleaned or "media"


def content_disposition(filename: str, mime: str) -> str:
    """``inline`` for the allow-listed types, else ``attachment``, with RFC 6266 names."""
    disposition = "inline" if mime in INLINE_TYPES else "attachment"
    fallback = _ascii_fallback(filename)
    encoded = quote(filename or "media", safe="")
    return f"{disposition}; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"


# --- pagination ----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Cursor:
    created_at: datetime
    id: UUID


def encode_cursor(cursor: Cursor) -> str:
    return shared_cursors.encode_cursor({"c": cursor.created_at.isoformat(),
                                         "i": str(cursor.id)})


def decode_cursor(value: str) -> Cursor:
    data = shared_cursors.decode_cursor(value)
    return Cursor(shared_cursors.cursor_time(data.get("c")),
                  shared_cursors.cursor_uuid(data.get("i")))


def parse_limit(value: str | None) -> int:
    return page_limit(value, default=DEFAULT_PAGE_SIZE, maximum=MAX_PAGE_SIZE)


def parse_media_id(value: str) -> UUID | None:
    """The UUID in a path segment, or None when it is not one (the caller answers 404)."""
    if len(value) != 36:
        return None
    try:
        return UUID(value)
    except ValueError:
        return None
