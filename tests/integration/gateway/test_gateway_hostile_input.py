"""Hostile JSON and parameters, through the gateway to the real auth and media apps: each
is a 400 problem document naming what was wrong, never a 5xx."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from services.gateway.audit import encode_cursor
from services.media.domain import Cursor
from services.media.domain import encode_cursor as encode_media_cursor
from shared.audit import Position, encode_position
from tests.integration.gateway.gateway_helpers import (
    BOUNDARY,
    GOOD_PASSWORD,
    USERNAME,
    Browser,
    multipart,
    png_bytes,
)

JSON = {"Content-Type": "application/json"}
# 30,000 levels in 60 KB: under the gateway's 64 KiB JSON limit, past Python's recursion.
DEEP_ARRAY = b"[" * 30_000 + b"]" * 30_000
# Times ISO 8601 can write that exist in no UTC calendar Python or PostgreSQL keep.
OUT_OF_RANGE_TIMES = (
    datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14))),
    datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-14))),
)


async def problem(response, status: int = 400) -> dict:
    body = await response.json()
    assert response.status == status, body
    assert response.content_type == "application/problem+json"
    return body


async def upload(browser: Browser) -> str:
    response = await browser.request("POST", "/api/media",
                                     data=multipart("dot.png", png_bytes(), "image/png"),
                                     headers={"Content-Type":
                                              f"multipart/form-data; boundary={BOUNDARY}"})
    assert response.status == 201, await response.text()
    return (await response.json())["items"][0]["id"]


def surrogate_json(fields: dict[str, str]) -> bytes:
    # json.dumps escapes a lone surrogate as \ud800, the way a hostile client would send it.
    return json.dumps(fields).encode()


@pytest.mark.parametrize("field", ["username", "password"])
async def test_lone_surrogate_password_is_400(real_stack: Browser, field: str) -> None:
    anonymous = Browser(real_stack.session, real_stack.base)
    fields = {"username": USERNAME, "password": GOOD_PASSWORD, field: "\ud800abc"}
    for path in ("/api/auth/login", "/api/auth/register"):
        response = await anonymous.request("POST", path, data=surrogate_json(fields),
                                           headers=JSON)
        assert (await problem(response))["code"] == "invalid_text"


@pytest.mark.parametrize("field", ["currentPassword", "newPassword"])
async def test_lone_surrogate_password_change_is_400(real_stack: Browser, field: str) -> None:
    fields = {"currentPassword": GOOD_PASSWORD, "newPassword": "amber-glacier-pivot-93",
              field: "\udfffabc"}
    response = await real_stack.request("POST", "/api/auth/password",
                                        data=surrogate_json(fields), headers=JSON)
    assert (await problem(response))["code"] == "invalid_text"
    assert (await real_stack.request("GET", "/api/auth/me")).status == 200


async def test_nul_in_stored_json_text_is_400(real_stack: Browser) -> None:
    anonymous = Browser(real_stack.session, real_stack.base)
    body = json.dumps({"username": "Run\x00ner", "password": GOOD_PASSWORD}).encode()
    for path in ("/api/auth/login", "/api/auth/register"):
        response = await anonymous.request("POST", path, data=body, headers=JSON)
        refused = await problem(response)
        assert (refused["code"], refused["field"]) == ("invalid_text", "username")
    # A password is only ever hashed: NUL is one of its characters, so this is a plain 401.
    body = json.dumps({"username": USERNAME, "password": "a\x00b"}).encode()
    response = await anonymous.request("POST", "/api/auth/login", data=body, headers=JSON)
    assert (await problem(response, 401))["code"] == "invalid_credentials"


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/api/auth/login"), ("POST", "/api/auth/register"),
    ("POST", "/api/auth/password"), ("PATCH", "/api/media/{id}"),
])
async def test_deeply_nested_json_is_400(real_stack: Browser, method: str, path: str) -> None:
    media_id = await upload(real_stack)
    for body in (DEEP_ARRAY, b'{"caption":' * 5_000 + b"1" + b"}" * 5_000):
        response = await real_stack.request(method, path.format(id=media_id), data=body,
                                            headers=JSON)
        assert (await problem(response))["code"] == "json_too_deep"


@pytest.mark.parametrize("caption", ["\ud800", "a\udc00b", "\ude00\ud83d"])
async def test_lone_surrogate_caption_is_400(real_stack: Browser, caption: str) -> None:
    media_id = await upload(real_stack)
    for fields in ({"caption": caption}, {"workoutId": caption}, {caption: "x"}):
        response = await real_stack.request("PATCH", f"/api/media/{media_id}",
                                            data=surrogate_json(fields), headers=JSON)
        assert (await problem(response))["code"] == "invalid_text"
    item = await (await real_stack.request("GET", f"/api/media/{media_id}")).json()
    assert item["caption"] is None


@pytest.mark.parametrize("path", ["/api/imports", "/api/media", "/api/audit"])
async def test_overlong_limit_is_400(real_stack: Browser, path: str) -> None:
    for value in ("9" * 5000, "1" * 4301, "0" * 100 + "5"):
        response = await real_stack.request("GET", f"{path}?limit={value}")
        assert (await problem(response))["code"] == "invalid_limit"


@pytest.mark.parametrize("moment", OUT_OF_RANGE_TIMES, ids=["year-1-east", "year-9999-west"])
async def test_out_of_range_media_cursor_is_400(real_stack: Browser, moment: datetime
                                                ) -> None:
    cursor = encode_media_cursor(Cursor(moment, uuid.uuid4()))
    response = await real_stack.request("GET", f"/api/media?cursor={cursor}")
    assert (await problem(response))["code"] == "invalid_cursor"


@pytest.mark.parametrize("moment", OUT_OF_RANGE_TIMES, ids=["year-1-east", "year-9999-west"])
@pytest.mark.parametrize("trail", ["auth", "media"])
async def test_out_of_range_audit_cursor_is_400(real_stack: Browser, moment: datetime,
                                                trail: str) -> None:
    positions: dict[str, str | None] = {"auth": None, "media": None}
    positions[trail] = encode_position(Position(moment, 1))
    response = await real_stack.request("GET", f"/api/audit?cursor={encode_cursor(positions)}")
    assert (await problem(response))["code"] == "invalid_cursor"
