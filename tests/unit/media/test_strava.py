"""activities.csv parsing, CSV paths as hostile input, and activity file checks."""

from __future__ import annotations

import dataclasses
import gzip
import io
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.media.imports.archive import ArchiveError, ArchiveLimits
from services.media.imports.strava import (
    INVALID,
    MISSING_FILE,
    ActivityFileError,
    activity_format,
    check_activity_file,
    parse_activities_csv,
    parse_date,
    resolve_reference,
)
from tests.media_archives import (
    BILLION_LAUGHS,
    XXE_PASSWD,
    Row,
    activities_csv,
    fit,
    fit_gz,
    gpx,
)

LIMITS = ArchiveLimits(max_entries=1000, max_uncompressed_bytes=100_000_000, max_ratio=200)


def parse(data: bytes, max_rows: int = 1000):
    return parse_activities_csv(io.StringIO(data.decode("utf-8-sig"), newline=""),
                                max_rows=max_rows)


def test_strava_header_with_repeated_columns_is_read() -> None:
    rows = [Row("101", filename="activities/101.gpx", media=["media/a.jpg", "media/b.jpg"]),
            Row("102", activity_type="Ride", distance_km="20.5", distance_m="20544.1",
                elapsed="3600", filename="activities/102.fit.gz")]
    activities, problems = parse(activities_csv(rows))
    assert problems == []
    first, second = activities
    assert first.strava_id == "101"
    assert first.started_at == datetime(2024, 1, 5, 7, 3, 12, tzinfo=UTC)
    assert first.name == "Morning Run"
    assert first.activity_type == "Run"
    # The second, detailed "Distance" column is in metres and wins over the summary one.
    assert first.distance_meters == pytest.approx(5012.3)
    assert first.elapsed_seconds == 1800
    assert first.filename == "activities/101.gpx"
    assert first.media == ("media/a.jpg", "media/b.jpg")
    assert second.activity_type == "Ride"
    assert second.distance_meters == pytest.approx(20544.1)


def test_an_older_export_with_single_columns_is_read_in_kilometres() -> None:
    data = ("\ufeffActivity ID,Activity Date,Activity Name,Activity Type,Elapsed Time,"
            "Distance,Filename\n"
            '7,"Mar 2, 2019, 6:00:00 PM",Evening,Run,1200,"3,5",activities/7.gpx\n').encode()
    (activity,), problems = parse(data)
    assert problems == []
    assert activity.distance_meters == pytest.approx(3500)
    assert activity.elapsed_seconds == 1200
    assert activity.started_at == datetime(2019, 3, 2, 18, 0, tzinfo=UTC)
    assert activity.media == ()


@pytest.mark.parametrize("text", ["Jan 5, 2024, 7:03:12\u202fAM", "2024-01-05 07:03:12",
                                  "2024-01-05T07:03:12Z", "Jan 5, 2024, 7:03:12 AM"])
def test_strava_date_forms_parse_to_utc(text: str) -> None:
    assert parse_date(text) == datetime(2024, 1, 5, 7, 3, 12, tzinfo=UTC)


@pytest.mark.parametrize("text", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
def test_strava_dates_outside_the_utc_calendar_are_not_dates(text: str) -> None:
    with pytest.raises(ValueError, match=r"^(0001|9999)-"):
        parse_date(text)


def test_bad_rows_are_reported_and_the_rest_kept() -> None:
    rows = [Row("abc"), Row("2", date="yesterday"), Row("3", distance_m="far", distance_km=""),
            Row("4", activity_type=""), Row("5")]
    activities, problems = parse(activities_csv(rows))
    assert [a.strava_id for a in activities] == ["5"]
    assert [(p.row, p.code) for p in problems] == [(1, INVALID), (2, INVALID), (3, INVALID),
                                                   (4, INVALID)]


def test_control_characters_in_names_are_removed() -> None:
    (activity,), _ = parse(activities_csv([Row("1", name="Run\u202e\x00 gpj.exe\n")]))
    assert activity.name == "Run gpj.exe"


@pytest.mark.parametrize("data", [b"", b"Name,Type\nx,Run\n"])
def test_a_csv_without_the_required_columns_is_refused(data: bytes) -> None:
    with pytest.raises(ArchiveError) as caught:
        parse(data)
    assert caught.value.code == "invalid_activities_csv"


def test_more_rows_than_the_limit_are_refused() -> None:
    with pytest.raises(ArchiveError):
        parse(activities_csv([Row(str(i)) for i in range(11)]), max_rows=10)


ENTRIES = {"activities/1.gpx", "media/a.jpg", "activities.csv", "secret.txt"}


@pytest.mark.parametrize(("value", "prefix", "expected"), [
    ("activities/1.gpx", "activities/", ("activities/1.gpx", None)),
    (" media/a.jpg ", "media/", ("media/a.jpg", None)),
    ("activities/2.gpx", "activities/", (None, MISSING_FILE)),
    ("../../etc/passwd", "activities/", (None, INVALID)),
    ("activities/../secret.txt", "activities/", (None, INVALID)),
    ("/etc/passwd", "media/", (None, INVALID)),
    ("media\\..\\secret.txt", "media/", (None, INVALID)),
    ("secret.txt", "media/", (None, INVALID)),
    ("activities.csv", "activities/", (None, INVALID)),
    ("media/a.jpg", "activities/", (None, INVALID)),
    ("media/", "media/", (None, INVALID)),
    ("C:/media/a.jpg", "media/", (None, INVALID)),
])
def test_csv_paths_resolve_only_to_entries_under_their_folder(value, prefix, expected) -> None:
    assert resolve_reference(value, prefix, ENTRIES) == expected


@pytest.mark.parametrize(("name", "fmt"), [("a.gpx", "gpx"), ("A.FIT.GZ", "fit.gz"),
                                           ("a.fit", "fit"), ("a.tcx.gz", "tcx.gz"),
                                           ("a.zip", None), ("a.gz", None)])
def test_activity_formats_come_from_the_name(name: str, fmt: str | None) -> None:
    assert activity_format(name) == fmt


def check(tmp_path: Path, data: bytes, fmt: str, limits: ArchiveLimits = LIMITS) -> None:
    path = tmp_path / "activity"
    path.write_bytes(data)
    check_activity_file(str(path), fmt, len(data), limits)


def failure(tmp_path: Path, data: bytes, fmt: str, limits: ArchiveLimits = LIMITS
            ) -> ActivityFileError:
    with pytest.raises(ActivityFileError) as caught:
        check(tmp_path, data, fmt, limits)
    return caught.value


def test_real_activity_files_pass(tmp_path: Path) -> None:
    check(tmp_path, gpx(500), "gpx")
    check(tmp_path, fit(), "fit")
    check(tmp_path, fit_gz(), "fit.gz")
    check(tmp_path, gzip.compress(gpx()), "gpx.gz")
    tcx = (b'<?xml version="1.0"?><TrainingCenterDatabase xmlns="http://www.garmin.com/'
           b'xmlschemas/TrainingCenterDatabase/v2"><Activities/></TrainingCenterDatabase>')
    check(tmp_path, tcx, "tcx")


def test_gpx_billion_laughs_is_refused_without_expanding(tmp_path: Path) -> None:
    assert failure(tmp_path, BILLION_LAUGHS, "gpx").code == "unsafe_xml"


def test_gpx_external_entity_is_refused(tmp_path: Path) -> None:
    error = failure(tmp_path, XXE_PASSWD, "gpx")
    assert error.code == "unsafe_xml"
    assert "root:" not in str(error)


@pytest.mark.parametrize("data", [
    b"<html><body>hi</body></html>", b"<kml><Document/></kml>", b"not xml at all", b"",
    b'<gpx version="1.1"><trk>', fit(),
])
def test_a_gpx_that_is_not_gpx_is_refused(tmp_path: Path, data: bytes) -> None:
    assert failure(tmp_path, data, "gpx").code == "invalid_activity_file"


@pytest.mark.parametrize("data", [gpx(), b"", b"\x0e\x10\x00\x00\x00\x00\x00\x00.FTT",
                                  fit()[:20]])
def test_a_fit_without_a_fit_header_is_refused(tmp_path: Path, data: bytes) -> None:
    assert failure(tmp_path, data, "fit").code == "invalid_activity_file"


def test_fit_gz_must_be_gzip_holding_fit(tmp_path: Path) -> None:
    assert failure(tmp_path, fit(), "fit.gz").code == "invalid_activity_file"
    assert failure(tmp_path, gzip.compress(gpx()), "fit.gz").code == "invalid_activity_file"
    assert failure(tmp_path, fit_gz()[:-6], "fit.gz").code == "invalid_activity_file"


def test_fit_gz_bomb_is_refused_while_inflating(tmp_path: Path) -> None:
    bomb = gzip.compress(fit(b"\x00" * 20_000_000))
    error = failure(tmp_path, bomb, "fit.gz")
    assert error.code == "compression_ratio_exceeded"
    small_total = dataclasses.replace(LIMITS, max_uncompressed_bytes=1000, max_ratio=1e9)
    assert failure(tmp_path, fit_gz(b"\x01" * 5000), "fit.gz",
                   small_total).code == "compression_ratio_exceeded"
