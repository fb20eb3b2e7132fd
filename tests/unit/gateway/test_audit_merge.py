"""The gateway's merge of the auth and media trails and its composite cursor."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest

from services.gateway.audit import decode_cursor, encode_cursor, merge
from shared.audit import Position, encode_position
from shared.errors import ValidationError

START = datetime(2026, 1, 1, tzinfo=UTC)


def item(service: str, second: int, number: int) -> dict:
    moment = START + timedelta(seconds=second)
    return {"time": moment.isoformat(), "service": service, "action": "x",
            "cursor": encode_position(Position(moment, number))}


def trail(service: str, seconds: list[int]) -> list[dict]:
    return [item(service, second, index + 1) for index, second in enumerate(seconds)]


def page_all(auth: list[dict], media: list[dict], limit: int) -> list[list[int]]:
    """Walk the whole merged trail page by page as the gateway would serve it."""
    trails = {"auth": auth, "media": media}
    positions: dict[str, str | None] = {"auth": "", "media": ""}
    pages = []
    while True:
        fetched = {}
        for name, records in trails.items():
            if positions[name] is None:
                continue
            start = 0
            if positions[name]:
                start = next(i for i, r in enumerate(records)
                             if r["cursor"] == positions[name]) + 1
            chunk = records[start:start + limit + 1]
            fetched[name] = {"items": chunk[:limit], "more": len(chunk) > limit}
        items, following = merge(fetched, positions, limit)
        pages.append([int(datetime.fromisoformat(i["time"]).timestamp() - START.timestamp())
                      for i in items])
        assert all("cursor" not in i for i in items)
        if following is None:
            return pages
        positions = decode_cursor(encode_cursor(following))


@pytest.mark.parametrize("limit", [1, 2, 3, 5, 50])
def test_paging_returns_every_record_once_newest_first(limit: int) -> None:
    auth = trail("auth", [100, 90, 55, 50, 10])
    media = trail("media", [95, 60, 52, 5])
    pages = page_all(auth, media, limit)
    flat = [second for page in pages for second in page]
    assert flat == sorted([100, 90, 55, 50, 10, 95, 60, 52, 5], reverse=True)
    assert all(len(page) == limit for page in pages[:-1])
    assert 1 <= len(pages[-1]) <= limit


def test_one_empty_trail_pages_the_other() -> None:
    assert page_all(trail("auth", [3, 2, 1]), [], 2) == [[3, 2], [1]]


def test_both_trails_empty_is_one_empty_last_page() -> None:
    assert page_all([], [], 10) == [[]]


def test_records_of_the_same_instant_are_all_served() -> None:
    pages = page_all(trail("auth", [7, 7, 7]), trail("media", [7, 7]), 2)
    assert sum(len(page) for page in pages) == 5


@pytest.mark.parametrize("cursor", [
    "not base64!!", base64.urlsafe_b64encode(b"[]").decode(),
    base64.urlsafe_b64encode(b'{"auth": ""}').decode(),
    base64.urlsafe_b64encode(b'{"auth": 5, "media": null}').decode(),
    base64.urlsafe_b64encode(b'{"auth": "bogus", "media": null}').decode(),
    base64.urlsafe_b64encode(b'{"auth": "", "media": "", "x": ""}').decode(),
    "A" * 2000,
])
def test_a_malformed_cursor_is_a_validation_error(cursor: str) -> None:
    with pytest.raises(ValidationError):
        decode_cursor(cursor)
