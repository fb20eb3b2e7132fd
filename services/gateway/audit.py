"""``GET /api/audit``: the caller's audit trail from auth and media, merged, newest first.

Each service keeps its own trail in its own schema and pages it by its own position
(time, id). The gateway asks both for a page, merges by time and hands out a composite
cursor holding one position per service: where the next page starts in each trail, or
``null`` once a trail has nothing older. No service reads the other's tables, and a page
costs two indexed queries however deep the client has paged.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Any

import aiohttp
import structlog
from aiohttp import hdrs, web

from services.gateway import metrics
from services.gateway.keys import CLIENT, UPSTREAMS, USER
from services.gateway.proxy import Upstream
from shared import cursors
from shared.audit import MAX_CURSOR_LENGTH, decode_position, parse_limit
from shared.errors import BadGatewayError, UnauthorizedError
from shared.identity import INTERNAL_TOKEN_HEADER
from shared.keys import REQUEST_ID
from shared.web import REQUEST_ID_HEADER, json_response

log = structlog.get_logger("gateway.audit")

# Each service's trail, in the order records of the same instant are listed.
SOURCES = (("auth", "/auth/audit"), ("media", "/audit"))
MAX_ITEMS_BYTES = 4 * 1024 * 1024

Positions = dict[str, str | None]


def encode_cursor(positions: Positions) -> str:
    return cursors.encode_cursor(positions)


def decode_cursor(value: str) -> Positions:
    """One entry per service: a position to continue after ("" for the newest record),
    or None when that trail is done."""
    data = cursors.decode_cursor(value, max_length=2 * MAX_CURSOR_LENGTH + 64)
    names = {name for name, _ in SOURCES}
    if set(data) != names:
        raise cursors.invalid_cursor()
    for position in data.values():
        if position is not None:
            if not isinstance(position, str):
                raise cursors.invalid_cursor()
            if position:
                decode_position(position)
    return data


def merge(pages: dict[str, dict[str, Any]], positions: Positions, limit: int
          ) -> tuple[list[dict[str, Any]], Positions | None]:
    """The newest ``limit`` records of the pages, and where each trail continues."""
    tagged = [(name, item) for name, _ in SOURCES
              for item in pages.get(name, {}).get("items", [])]
    # A stable sort keeps each trail's own order, so what is taken from each is a prefix.
    tagged.sort(key=lambda pair: datetime.fromisoformat(pair[1]["time"]), reverse=True)
    taken = tagged[:limit]
    following: Positions = {}
    for name, _ in SOURCES:
        if name not in pages:
            following[name] = positions.get(name)
            continue
        mine = [item for source, item in taken if source == name]
        fetched = pages[name]["items"]
        if mine:
            following[name] = mine[-1]["cursor"]
        else:
            following[name] = positions.get(name)
        if len(mine) == len(fetched) and not pages[name]["more"]:
            following[name] = None
    items = [{key: value for key, value in item.items() if key != "cursor"}
             for _, item in taken]
    done = all(value is None for value in following.values())
    return items, None if done else following


async def _fetch(request: web.Request, name: str, path: str, limit: int,
                 position: str | None) -> dict[str, Any]:
    upstream: Upstream = request.app[UPSTREAMS][name]
    claims = request[USER]
    token = upstream.identity.token(claims.subject, claims.token_id, request[CLIENT].ip,
                                    request.headers.get(hdrs.USER_AGENT))
    query = {"limit": str(limit)}
    if position is not None:
        query["cursor"] = position
    headers = {INTERNAL_TOKEN_HEADER: token, REQUEST_ID_HEADER: request[REQUEST_ID]}
    try:
        async with upstream.session.get(f"{upstream.base_url}{path}", params=query,
                                        headers=headers) as answer:
            if answer.status == 401:
                raise UnauthorizedError()
            body = await answer.content.read(MAX_ITEMS_BYTES + 1)
            if answer.status != 200 or len(body) > MAX_ITEMS_BYTES:
                raise ValueError(f"status {answer.status}")
            page = json.loads(body)
            if not isinstance(page.get("items"), list) or not isinstance(page.get("more"),
                                                                           bool):
                raise ValueError("not a page")
            return page
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        metrics.UPSTREAM_ERRORS.labels(name, "audit").inc()
        log.warning("audit_upstream_failed", upstream=name, error=str(exc))
        raise BadGatewayError() from None


async def get_audit(request: web.Request) -> web.Response:
    limit = parse_limit(request.query.get("limit"))
    cursor = request.query.get("cursor")
    positions = decode_cursor(cursor) if cursor else {name: "" for name, _ in SOURCES}
    wanted = [(name, path) for name, path in SOURCES if positions[name] is not None]
    results = await asyncio.gather(*(
        _fetch(request, name, path, limit, positions[name] or None) for name, path in wanted))
    # A trail that is done is asked nothing; its entry stays None.
    pages = dict(zip((name for name, _ in wanted), results, strict=True))
    items, following = merge(pages, positions, limit)
    return json_response({"items": items,
                          "nextCursor": encode_cursor(following) if following else None})
