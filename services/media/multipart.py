"""Reading ``multipart/form-data`` as a stream, with every malformation a 400.

aiohttp's reader raises a mix of exception types on broken input; they are turned into
one ``BadRequestError`` here so that no malformed body becomes a 500.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import BodyPartReader, MultipartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from shared.errors import BadRequestError, PayloadTooLargeError, UnsupportedMediaTypeError

# Big enough to keep the per-chunk overhead small, small enough that memory per upload
# stays flat.
UPLOAD_CHUNK_BYTES = 256 * 1024
MAX_FIELD_BYTES = 16 * 1024

_MALFORMED = (ValueError, AssertionError, RuntimeError, HttpProcessingError, LookupError)


def malformed() -> BadRequestError:
    return BadRequestError("The multipart body is malformed.", code="malformed_multipart")


async def open_form(request: web.Request) -> MultipartReader:
    if request.content_type != "multipart/form-data":
        raise UnsupportedMediaTypeError("The request body must be multipart/form-data.")
    try:
        return await request.multipart()
    except _MALFORMED:
        raise malformed() from None


async def parts(reader: MultipartReader) -> AsyncIterator[BodyPartReader]:
    """The body parts in order; a nested multipart or a framing error is a 400."""
    while True:
        try:
            part = await reader.next()
        except _MALFORMED:
            raise malformed() from None
        if part is None:
            return
        if not isinstance(part, BodyPartReader):
            raise BadRequestError("Nested multipart bodies are not accepted.",
                                  code="malformed_multipart")
        yield part


async def part_chunks(part: BodyPartReader,
                      chunk_bytes: int = UPLOAD_CHUNK_BYTES) -> AsyncIterator[bytes]:
    """A part's raw bytes as they arrive, one bounded chunk at a time."""
    while True:
        try:
            chunk = await part.read_chunk(chunk_bytes)
        except _MALFORMED:
            raise malformed() from None
        if not chunk:
            return
        yield chunk


async def read_field(part: BodyPartReader, name: str,
                     max_bytes: int = MAX_FIELD_BYTES) -> str:
    """A text field, read with a bound and decoded as strict UTF-8."""
    data = bytearray()
    async for chunk in part_chunks(part, 8192):
        data += chunk
        if len(data) > max_bytes:
            raise PayloadTooLargeError(f"The form field '{name}' is too large.",
                                       code="field_too_large")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequestError(f"The form field '{name}' is not valid UTF-8.",
                              code="invalid_encoding") from None


async def drain(part: BodyPartReader, within: web.Request, max_total_bytes: int) -> None:
    """Read the rest of a refused part to the void, never past the request's byte budget."""
    async for _ in part_chunks(part):
        if within.content.total_bytes > max_total_bytes:
            raise PayloadTooLargeError("The request body is too large.")
