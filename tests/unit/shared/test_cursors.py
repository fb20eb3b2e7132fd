"""The one cursor codec: opaque, bounded, and range-checked so the database never sees a
time or id it cannot hold."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from services.media import domain
from shared.audit import Position, decode_position, encode_position
from shared.cursors import cursor_id, cursor_time, cursor_uuid, decode_cursor, encode_cursor
from shared.errors import ValidationError


def raw_cursor(data: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def refused(call, *args) -> None:
    with pytest.raises(ValidationError) as caught:
        call(*args)
    assert caught.value.code == "invalid_cursor"
    assert caught.value.field == "cursor"


def test_cursor_round_trip() -> None:
    fields = {"t": "2026-11-28T04:05:06+00:00", "i": "42"}
    assert decode_cursor(encode_cursor(fields)) == fields
    assert "2026" not in encode_cursor(fields)


@pytest.mark.parametrize("value", [
    "", "!!!", "a b", "A" * 201, "%%%", raw_cursor([1]), raw_cursor("x"), raw_cursor(None),
    raw_cursor({"a": {"b": {"c": 1}}}), raw_cursor({"t": "\ud800"}), raw_cursor({"t": "\x00"}),
    base64.urlsafe_b64encode(b"\xff\xfe{}").decode(), "eyJ",
])
def test_anything_but_a_small_json_object_is_an_invalid_cursor(value: str) -> None:
    refused(decode_cursor, value)


@pytest.mark.parametrize("value", [
    "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "2026-11-28T00:00:00",
    "2026-02-30T00:00:00+00:00", "yesterday", "", None, 5, "2026-11-28T00:00:00+00:00" + " " * 64,
])
def test_cursor_times_must_exist_in_utc(value: object) -> None:
    refused(cursor_time, value)


def test_cursor_times_at_the_edges_of_the_range_are_accepted_in_utc() -> None:
    assert cursor_time("0001-01-01T00:00:00-14:00") == datetime(1, 1, 1, 14, tzinfo=UTC)
    assert cursor_time("9999-12-31T09:59:59+14:00") == datetime(9999, 12, 30, 19, 59, 59,
                                                                tzinfo=UTC)
    moment = datetime(2026, 11, 28, 4, 5, 6, tzinfo=timezone(timedelta(hours=2)))
    assert cursor_time(moment.isoformat()) == moment


@pytest.mark.parametrize("value", ["-1", "1.0", "9223372036854775808", "9" * 5000, "", 7, None])
def test_cursor_ids_are_bigint_digit_strings(value: object) -> None:
    refused(cursor_id, value)


def test_cursor_uuid_needs_the_canonical_form() -> None:
    identifier = uuid.uuid4()
    assert cursor_uuid(str(identifier)) == identifier
    for value in (identifier.hex, f"{{{identifier}}}", "x" * 36, None):
        refused(cursor_uuid, value)


def test_audit_positions_round_trip_and_refuse_out_of_range_times() -> None:
    position = Position(datetime(2026, 11, 28, 4, 5, 6, 789012, tzinfo=UTC), 12)
    assert decode_position(encode_position(position)) == position
    for stamp in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"):
        refused(decode_position, raw_cursor({"t": stamp, "i": "1"}))
    refused(decode_position, raw_cursor({"t": "2026-11-28T00:00:00+00:00", "i": "9" * 5000}))


def test_media_cursors_refuse_out_of_range_times() -> None:
    for stamp in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"):
        refused(domain.decode_cursor, raw_cursor({"c": stamp, "i": str(uuid.uuid4())}))
