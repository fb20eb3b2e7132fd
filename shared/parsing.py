"""Parsers for what a client sends, strict enough that nothing they accept breaks later.

Every value they return can be converted, compared and stored without raising: JSON is
bounded in nesting depth before it is parsed and holds no text PostgreSQL cannot store
(lone surrogates, NUL); whole numbers are bounded in digits before they are converted;
times exist in UTC.
Each refusal is a ``ValueError`` subclass, which the callers turn into their own 400.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from datetime import UTC, datetime
from itertools import accumulate
from typing import Any

MAX_JSON_DEPTH = 32
# No field of the API is a number this long; Python would refuse past 4300 digits anyway,
# after spending quadratic time converting them.
MAX_JSON_INTEGER_DIGITS = 32

# A JSON string, or what is left of the text when one never ends: always matching, so
# the scan stays linear even on a text of unbalanced quotes.
_STRING = re.compile(r'"(?:[^"\\]|\\.)*+(?:"|\Z)', re.DOTALL)
# Brackets as +1 and -1 (signed bytes), everything else dropped.
_BRACKETS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_NOT_BRACKETS = bytes(set(range(256)) - set(b"[{]}"))
# Lone surrogates cannot be encoded as UTF-8, and PostgreSQL text cannot hold NUL.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_UNENCODABLE = re.compile("[\ud800-\udfff]")


class JsonRefusedError(ValueError):
    """The document is refused; ``code`` says why, in the API's error vocabulary, and
    ``field`` names the top-level member at fault when there is one."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


def nesting_exceeds(text: str, max_depth: int) -> bool:
    """Whether ``text`` nests arrays and objects deeper than ``max_depth``.

    Strings are removed, brackets counted with a running sum, all in C-level passes over
    the text, so that a document too deep for the recursive parser is refused in linear
    time without recursing. Where the text is not valid JSON the count past the first
    error may be anything, which is harmless: the parser stops at that error, and up to it
    the count is exact.
    """
    if text.count("[") + text.count("{") <= max_depth:
        return False
    outside = _STRING.sub("", text).encode("utf-8", "surrogatepass")
    steps = memoryview(outside.translate(_BRACKETS, _NOT_BRACKETS)).cast("b")
    return max(accumulate(steps), default=0) > max_depth


def unstorable_text(value: Any, pattern: re.Pattern[str] = _UNSTORABLE) -> bool:
    """Whether any key or string anywhere in a parsed document holds a lone surrogate or NUL
    (or whatever else ``pattern`` finds).

    Iterative: the depth is bounded already, but a wide document must not cost a frame per
    element either.
    """
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if pattern.search(item):
                return True
        elif isinstance(item, dict):
            for key, member in item.items():
                if pattern.search(key):
                    return True
                pending.append(member)
        elif isinstance(item, list):
            pending.extend(item)
    return False


def _refuse_unstorable(data: Any, nul_allowed: Collection[str]) -> None:
    message = ("The JSON document holds text that cannot be stored (a lone surrogate or a "
               "NUL character).")
    if not isinstance(data, dict):
        if unstorable_text(data):
            raise JsonRefusedError("invalid_text", message)
        return
    for key, member in data.items():
        if _UNSTORABLE.search(key):
            raise JsonRefusedError("invalid_text", message)
        pattern = _UNENCODABLE if key in nul_allowed else _UNSTORABLE
        if unstorable_text(member, pattern):
            raise JsonRefusedError("invalid_text", f"'{key}' holds text that cannot be "
                                   "stored (a lone surrogate or a NUL character).", key)


def _bounded_int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_JSON_INTEGER_DIGITS:
        raise JsonRefusedError("malformed_json", "A number in the JSON document is too long.")
    return int(digits)


def _no_constant(name: str) -> Any:
    raise JsonRefusedError("malformed_json", f"{name} is not JSON.")


def loads(raw: bytes | str, *, max_depth: int = MAX_JSON_DEPTH,
          nul_allowed: Collection[str] = ()) -> Any:
    """Parse strict UTF-8 JSON whose values are all safe to use and to store.

    Refuses (``JsonRefusedError``): bytes that are not UTF-8, nesting deeper than
    ``max_depth``, over-long integers, ``NaN``/``Infinity``, and lone surrogates or NUL
    in any key or string. ``nul_allowed`` names top-level members that are never stored
    as text (passwords, which are only hashed): NUL is theirs to hold, surrogates are not.
    """
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes | bytearray) else raw
    except UnicodeDecodeError:
        raise JsonRefusedError("malformed_json", "The JSON document is not UTF-8.") from None
    if nesting_exceeds(text, max_depth):
        raise JsonRefusedError("json_too_deep",
                               f"The JSON document nests deeper than {max_depth} levels.")
    try:
        data = json.loads(text, parse_int=_bounded_int, parse_constant=_no_constant)
    except JsonRefusedError:
        raise
    except (ValueError, RecursionError):
        raise JsonRefusedError("malformed_json", "The JSON document is not valid.") from None
    _refuse_unstorable(data, nul_allowed)
    return data


def whole_number(value: str, *, minimum: int, maximum: int) -> int | None:
    """``value`` as an int when it is ASCII digits from ``minimum`` to ``maximum``, else None.

    The length is checked first, so that no huge digit string is ever converted.
    """
    if (not 0 < len(value) <= len(str(maximum)) or not value.isascii()
            or not value.isdigit()):
        return None
    number = int(value)
    return number if minimum <= number <= maximum else None


def in_utc(moment: datetime) -> datetime:
    """An aware time as UTC; ``ValueError`` when it is naive or exists in no UTC calendar
    (``0001-01-01T00:00:00+14:00`` is year 0 in UTC), which Python and PostgreSQL refuse."""
    if moment.tzinfo is None:
        raise ValueError("a time without an offset")
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError("a time outside the UTC calendar") from None
