"""Reading ``multipart/form-data`` as a stream, with every malformation a 400.

aiohttp's reader raises a mix of exception types on broken input; they are turned into
one ``BadRequestError`` here so that no malformed body becomes a 500.
"""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import BodyPartReader, MultipartReader, StreamReader, hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.multipart import (
    BadContentDispositionHeader,
    BadContentDispositionParam,
    parse_content_disposition,
)
from multidict import CIMultiDictProxy

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
        return _CheckedReader(request.headers, request.content)
    except _MALFORMED:
        raise malformed() from None


def _check_disposition(headers: Mapping[str, str]) -> None:
    # aiohttp only warns about a malformed header and carries on without the name, which
    # would silently turn a file into a nameless field. No await happens in here, so the
    # temporary warning filter cannot leak into other tasks.
    with warnings.catch_warnings():
        warnings.simplefilter("error", BadContentDispositionHeader)
        warnings.simplefilter("error", BadContentDispositionParam)
        try:
            parse_content_disposition(headers.get(hdrs.CONTENT_DISPOSITION))
        except (BadContentDispositionHeader, BadContentDispositionParam, *_MALFORMED):
            raise BadRequestError("A form part has a malformed Content-Disposition header.",
                                  code="malformed_multipart") from None


class _CheckedPartReader(BodyPartReader):
    """A part reader that refuses a malformed Content-Disposition as it is created."""

    def __init__(self, boundary: bytes, headers: CIMultiDictProxy[str], content: StreamReader,
                 **kwargs: Any) -> None:
        _check_disposition(headers)
        super().__init__(boundary, headers, content, **kwargs)


class _CheckedReader(MultipartReader):
    part_reader_cls = _CheckedPartReader


@dataclass(frozen=True, slots=True)
class PartHead:
    name: str
    # None when the part is not a file; the raw client name otherwise (may be empty).
    filename: str | None
    declared_type: str | None


def part_head(part: BodyPartReader) -> PartHead:
    """The part's name, file name and declared type; a part without a name is a 400."""
    name, filename = part.name, part.filename
    if not name:
        raise BadRequestError("A form part has no name.", code="malformed_multipart")
    return PartHead(name, filename, part.headers.get(hdrs.CONTENT_TYPE))


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
    name = name[:64]
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
