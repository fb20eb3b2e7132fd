"""The manifest of this service's export: written by the export, read by an import.

``manifest.json`` lists every activity and media item with its path in the archive; an
import reads it back item by item, and a malformed item is skipped rather than trusted.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from services.media.imports.archive import ArchiveError
from services.media.imports.strava import StravaActivity
from shared import parsing

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "tempo-export"
MANIFEST_VERSION = 1
MAX_MANIFEST_BYTES = 64 * 1024 * 1024


def parse(data: bytes) -> dict[str, Any] | None:
    """The manifest document; None when the bytes are not a Tempo export's manifest."""
    try:
        document = parsing.loads(data)
    except ValueError:
        return None
    if not isinstance(document, dict) or document.get("format") != MANIFEST_FORMAT:
        return None
    if document.get("version") != MANIFEST_VERSION:
        raise ArchiveError("The export was made by an incompatible version.",
                           code="unsupported_export_version", entry=MANIFEST_NAME)
    return document


def _optional(item: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = item.get(key)
    if value is None:
        return None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(key)
    return value


def _timestamp(item: dict[str, Any], key: str) -> datetime | None:
    value = _optional(item, key, str)
    if value is None:
        return None
    try:
        return parsing.in_utc(datetime.fromisoformat(value))
    except ValueError:
        raise ValueError(key) from None


def activity_item(index: int, item: Any) -> tuple[StravaActivity, str | None] | None:
    if not isinstance(item, dict):
        return None
    try:
        strava_id = _optional(item, "stravaId", str)
        activity_type = _optional(item, "type", str)
        if not strava_id or not strava_id.isascii() or not strava_id.isdigit() \
                or len(strava_id) > 20 or not activity_type or len(activity_type) > 64:
            return None
        distance = _optional(item, "distanceMeters", (int, float))
        elapsed = _optional(item, "elapsedSeconds", int)
        activity = StravaActivity(
            row=index, strava_id=strava_id, started_at=_timestamp(item, "startedAt"),
            name=(_optional(item, "name", str) or "")[:500], activity_type=activity_type,
            elapsed_seconds=elapsed,
            distance_meters=float(distance) if distance is not None else None,
            filename=_optional(item, "path", str), media=())
        return activity, _optional(item, "filename", str)
    except ValueError:
        return None


def media_item(item: Any) -> dict[str, Any] | None:
    if not isinstance(item, dict):
        return None
    try:
        path = _optional(item, "path", str)
        if not path:
            return None
        return {
            "path": path,
            "filename": _optional(item, "filename", str),
            "workout_id": _optional(item, "workoutId", str),
            "caption": _optional(item, "caption", str),
            "created_at": _timestamp(item, "createdAt"),
            "sha256": _optional(item, "sha256", str),
        }
    except ValueError:
        return None
