"""The parts of a Strava data export that Tempo uses, read as hostile input.

``activities.csv`` names each activity's file (``Filename``, under ``activities/``) and its
photos and videos (``Media``, ``|``-separated, under ``media/``). Those paths are written by
whoever made the archive, so a path is used only when it is a safe name under the right
folder that is really an entry of the archive. Activity files are checked for what they
claim to be: GPX and TCX are parsed with defusedxml (no DTD, no entities), FIT must carry
its header, and gzip-compressed variants are inflated within the archive's bounds.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
import struct
import unicodedata
import xml.etree.ElementTree as StdElementTree
import zlib
from collections.abc import Container, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO

from defusedxml import DefusedXmlException
from defusedxml import ElementTree as SafeElementTree

from services.media.imports.archive import (
    CHUNK_SIZE,
    ArchiveError,
    ArchiveLimits,
    unsafe_name_reason,
)
from shared import parsing

ACTIVITIES_CSV = "activities.csv"
ACTIVITIES_PREFIX = "activities/"
MEDIA_PREFIX = "media/"
MAX_CSV_BYTES = 64 * 1024 * 1024
MAX_NAME_LENGTH = 500
MAX_TYPE_LENGTH = 64
MAX_STRAVA_ID_LENGTH = 20

# Codes recorded per row or per file in an import's summary.
INVALID = "invalid"
MISSING_FILE = "missing_file"

# Activity file formats by suffix, longest first so ".fit.gz" wins over ".gz".
ACTIVITY_FORMATS = ("fit.gz", "gpx.gz", "tcx.gz", "fit", "gpx", "tcx")
_XML_ROOTS = {"gpx": "gpx", "tcx": "TrainingCenterDatabase"}
_FIT_SIGNATURE = b".FIT"
_FIT_HEADER_SIZES = (12, 14)

_DATE_FORMATS = (
    "%b %d, %Y, %I:%M:%S %p",  # Jan 5, 2024, 7:03:12 AM (the export's usual form)
    "%b %d, %Y %I:%M:%S %p",
    "%d %b %Y, %H:%M:%S",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%dT%H:%M:%SZ",
)
_NUMBER = re.compile(r"[0-9]+(?:[.,][0-9]+)?")
_STRAVA_ID = re.compile(r"[0-9]{1,20}")


class ActivityFileError(Exception):
    """An activity file is not what its name claims."""

    def __init__(self, message: str, code: str = "invalid_activity_file") -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class RowProblem:
    """A CSV row, or one path in it, that cannot be used."""

    row: int
    code: str
    message: str
    entry: str | None = None


@dataclass(frozen=True, slots=True)
class StravaActivity:
    row: int
    strava_id: str
    started_at: datetime | None
    name: str
    activity_type: str
    elapsed_seconds: int | None
    distance_meters: float | None
    filename: str | None
    media: tuple[str, ...] = field(default=())


# Columns ------------------------------------------------------------------------------

def _column_key(name: str) -> str:
    return " ".join(name.replace("\ufeff", "").split()).casefold()


def _columns(header: list[str]) -> dict[str, list[int]]:
    """Column positions by normalised name; Strava repeats some names (see below)."""
    positions: dict[str, list[int]] = {}
    for index, name in enumerate(header):
        positions.setdefault(_column_key(name), []).append(index)
    return positions


def _cell(row: list[str], positions: list[int] | None, occurrence: int = 0) -> str:
    if not positions or occurrence >= len(positions):
        return ""
    index = positions[occurrence]
    return row[index].strip() if index < len(row) else ""


def _clean_text(value: str, limit: int) -> str:
    text = "".join(char for char in value
                   if unicodedata.category(char) not in {"Cc", "Cf"} or char == " ")
    return " ".join(text.split())[:limit]


def parse_number(value: str) -> float | None:
    value = value.strip()
    if not value:
        return None
    if _NUMBER.fullmatch(value) is None:
        raise ValueError(value)
    return float(value.replace(",", "."))


def parse_date(value: str) -> datetime | None:
    """Strava writes its dates in UTC, in an English locale form."""
    text = " ".join(value.replace("\u202f", " ").replace("\xa0", " ").split())
    if not text:
        return None
    for pattern in _DATE_FORMATS:
        try:
            return datetime.strptime(text, pattern).replace(tzinfo=UTC)
        except ValueError:
            continue
    try:
        parsed = datetime.fromisoformat(text)
        return parsing.in_utc(parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC))
    except ValueError:
        raise ValueError(value) from None


def _distance_meters(row: list[str], positions: list[int] | None) -> float | None:
    # Strava's export has two "Distance" columns: the summary one in the athlete's unit
    # (kilometres by default) and, further right, the detailed one in metres. The metres
    # are exact, so they win; an export with only one column has the kilometres.
    if positions and len(positions) > 1:
        meters = parse_number(_cell(row, positions, 1))
        if meters is not None:
            return meters
    kilometres = parse_number(_cell(row, positions, 0))
    return None if kilometres is None else kilometres * 1000


def _elapsed_seconds(row: list[str], positions: list[int] | None) -> int | None:
    # Also repeated: whole seconds first, fractional seconds later. Either will do.
    for occurrence in range(len(positions or ())):
        value = parse_number(_cell(row, positions, occurrence))
        if value is not None:
            return round(value)
    return None


def parse_activities_csv(stream: IO[str], *, max_rows: int
                         ) -> tuple[list[StravaActivity], list[RowProblem]]:
    """Every usable row, and a problem for every row that is not (blocking)."""
    reader = csv.reader(stream)
    try:
        header = next(reader)
    except StopIteration:
        raise ArchiveError("activities.csv is empty.", code="invalid_activities_csv",
                           entry=ACTIVITIES_CSV) from None
    except csv.Error as exc:
        raise ArchiveError("activities.csv cannot be read as CSV.",
                           code="invalid_activities_csv", entry=ACTIVITIES_CSV) from exc
    columns = _columns(header)
    for required in ("activity id", "activity type"):
        if required not in columns:
            raise ArchiveError(f"activities.csv has no '{required.title()}' column.",
                               code="invalid_activities_csv", entry=ACTIVITIES_CSV)
    activities: list[StravaActivity] = []
    problems: list[RowProblem] = []
    row_number = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise ArchiveError(f"activities.csv is malformed after row {row_number}.",
                               code="invalid_activities_csv", entry=ACTIVITIES_CSV) from exc
        row_number += 1
        if row_number > max_rows:
            raise ArchiveError(f"activities.csv has more than {max_rows} rows.",
                               code="invalid_activities_csv", entry=ACTIVITIES_CSV)
        if not any(cell.strip() for cell in row):
            continue
        try:
            activities.append(_activity(row_number, row, columns))
        except ValueError as exc:
            problems.append(RowProblem(row_number, INVALID, str(exc)))
    return activities, problems


def _activity(number: int, row: list[str], columns: dict[str, list[int]]) -> StravaActivity:
    strava_id = _cell(row, columns.get("activity id"))
    if _STRAVA_ID.fullmatch(strava_id) is None:
        raise ValueError(f"Row {number}: the activity id is not a number.")
    activity_type = _clean_text(_cell(row, columns.get("activity type")), MAX_TYPE_LENGTH)
    if not activity_type:
        raise ValueError(f"Row {number}: the activity type is missing.")
    try:
        started_at = parse_date(_cell(row, columns.get("activity date")))
    except ValueError:
        raise ValueError(f"Row {number}: the activity date is not a date.") from None
    try:
        distance = _distance_meters(row, columns.get("distance"))
        elapsed = _elapsed_seconds(row, columns.get("elapsed time"))
    except ValueError:
        raise ValueError(f"Row {number}: the distance or elapsed time is not a number."
                         ) from None
    if distance is not None and not 0 <= distance < 1e9:
        raise ValueError(f"Row {number}: the distance is out of range.")
    if elapsed is not None and not 0 <= elapsed < 2**31:
        raise ValueError(f"Row {number}: the elapsed time is out of range.")
    filename = _cell(row, columns.get("filename")) or None
    media_cell = _cell(row, columns.get("media"))
    media = tuple(dict.fromkeys(part.strip() for part in media_cell.split("|")
                                if part.strip()))
    return StravaActivity(
        row=number, strava_id=strava_id, started_at=started_at,
        name=_clean_text(_cell(row, columns.get("activity name")), MAX_NAME_LENGTH),
        activity_type=activity_type, elapsed_seconds=elapsed, distance_meters=distance,
        filename=filename, media=media,
    )


# Paths written in the CSV ---------------------------------------------------------------

def resolve_reference(value: str, prefix: str, entries: Container[str]
                      ) -> tuple[str | None, str | None]:
    """``(entry name, None)`` for a usable path, else ``(None, INVALID or MISSING_FILE)``.

    A path is usable only when it is a safe relative name directly naming an entry under
    ``prefix``; anything that points elsewhere is invalid, whether or not it exists.
    """
    value = value.strip()
    if unsafe_name_reason(value) is not None or value.endswith("/"):
        return None, INVALID
    if not value.startswith(prefix) or len(value) == len(prefix):
        return None, INVALID
    if value not in entries:
        return None, MISSING_FILE
    return value, None


def activity_format(name: str) -> str | None:
    lowered = name.lower()
    for suffix in ACTIVITY_FORMATS:
        if lowered.endswith("." + suffix):
            return suffix
    return None


# Activity file content -------------------------------------------------------------------

class _BoundedReader(io.RawIOBase):
    """Bytes from ``source``, refused once more than ``limit`` have come out."""

    def __init__(self, source: IO[bytes], limit: int) -> None:
        super().__init__()
        self._source = source
        self._limit = limit
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._source.read(len(buffer))
        self.count += len(data)
        if self.count > self._limit:
            raise ActivityFileError("The compressed activity file inflates past the "
                                    "allowed size; it looks like a bomb.",
                                    code="compression_ratio_exceeded")
        buffer[: len(data)] = data
        return len(data)


def check_activity_file(path: str, fmt: str, size: int, limits: ArchiveLimits) -> None:
    """Raise ActivityFileError unless the file at ``path`` is a real ``fmt`` (blocking)."""
    with open(path, "rb") as raw:
        if fmt.endswith(".gz"):
            inner = fmt.removesuffix(".gz")
            if raw.read(2) != b"\x1f\x8b":
                raise ActivityFileError("The file is named .gz but is not gzip.")
            raw.seek(0)
            limit = min(limits.entry_limit(size), limits.max_uncompressed_bytes)
            try:
                with gzip.GzipFile(fileobj=raw, mode="rb") as inflated:
                    bounded = io.BufferedReader(_BoundedReader(inflated, limit),
                                                buffer_size=CHUNK_SIZE)
                    _check_plain(bounded, inner)
            except (OSError, EOFError, zlib.error) as exc:
                raise ActivityFileError("The gzip data is damaged.") from exc
        else:
            _check_plain(raw, fmt)


def _check_plain(stream: IO[bytes], fmt: str) -> None:
    if fmt == "fit":
        check_fit(stream)
    else:
        check_xml(stream, _XML_ROOTS[fmt])


def check_fit(stream: IO[bytes]) -> None:
    header = stream.read(14)
    if len(header) < 12 or header[0] not in _FIT_HEADER_SIZES or header[8:12] != _FIT_SIGNATURE:
        raise ActivityFileError("The file does not carry a FIT header.")
    header_size = header[0]
    (data_size,) = struct.unpack_from("<I", header, 4)
    length = len(header)
    while chunk := stream.read(CHUNK_SIZE):
        length += len(chunk)
    if length < header_size + data_size:
        raise ActivityFileError("The FIT file is shorter than its header says.")


def _local_name(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def check_xml(stream: IO[bytes], root: str) -> None:
    """Parse the whole document with no DTD and no entities, keeping memory flat."""
    stack: list[StdElementTree.Element] = []
    try:
        events: Iterator = SafeElementTree.iterparse(
            stream, events=("start", "end"), forbid_dtd=True, forbid_entities=True,
            forbid_external=True)
        for event, element in events:
            if event == "start":
                if not stack and _local_name(element.tag) != root:
                    raise ActivityFileError(
                        f"The document's root element is not '{root}'.")
                stack.append(element)
                continue
            stack.pop()
            element.clear()
            if stack:
                # The finished element is always its parent's last child; dropping it
                # keeps a large track from building a tree in memory.
                del stack[-1][-1]
    except DefusedXmlException as exc:
        raise ActivityFileError("The XML declares a DTD or entities, which are refused "
                                "(entity expansion and external entities).",
                                code="unsafe_xml") from exc
    except StdElementTree.ParseError as exc:
        raise ActivityFileError("The file is not well-formed XML.") from exc
    if stack:
        raise ActivityFileError("The XML document is incomplete.")
