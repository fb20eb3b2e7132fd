"""Page cursors: opaque to the client, checked whole when they come back.

A cursor is a small JSON object, base64url without padding. Decoding bounds the length,
parses through the strict JSON reader, and each member is read by a helper that checks
its range too, so that a cursor that decodes is one the database can be asked about:
``0001-01-01T00:00:00+14:00`` is a valid ISO time but no instant PostgreSQL or Python
can hold in UTC.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

from shared import parsing
from shared.errors import ValidationError

MAX_CURSOR_LENGTH = 200
# Cursors are flat: a composite one holds others as strings, never as nested objects.
_MAX_DEPTH = 1
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
_MAX_TIME_LENGTH = 64
MAX_ID = 2**63 - 1


def invalid_cursor() -> ValidationError:
    return ValidationError("cursor", "'cursor' is not a valid cursor.", code="invalid_cursor")


def encode_cursor(fields: Mapping[str, Any]) -> str:
    raw = json.dumps(fields, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(value: str, *, max_length: int = MAX_CURSOR_LENGTH) -> dict[str, Any]:
    """The cursor's object; ``ValidationError`` (``invalid_cursor``) for anything else."""
    if len(value) > max_length or not _BASE64URL.fullmatch(value):
        raise invalid_cursor()
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        data = parsing.loads(raw, max_depth=_MAX_DEPTH)
    except (ValueError, binascii.Error):
        raise invalid_cursor() from None
    if not isinstance(data, dict):
        raise invalid_cursor()
    return data


def cursor_time(value: Any) -> datetime:
    """A timezone-aware ISO time that exists in UTC, returned in UTC."""
    if not isinstance(value, str) or len(value) > _MAX_TIME_LENGTH:
        raise invalid_cursor()
    try:
        return parsing.in_utc(datetime.fromisoformat(value))
    except ValueError:
        raise invalid_cursor() from None


def cursor_id(value: Any) -> int:
    """A row id: a string of digits up to PostgreSQL's bigint."""
    number = parsing.whole_number(value, minimum=0, maximum=MAX_ID) \
        if isinstance(value, str) else None
    if number is None:
        raise invalid_cursor()
    return number


def cursor_uuid(value: Any) -> UUID:
    if not isinstance(value, str) or len(value) != 36:
        raise invalid_cursor()
    try:
        return UUID(value)
    except ValueError:
        raise invalid_cursor() from None
