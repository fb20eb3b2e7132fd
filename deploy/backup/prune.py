"""Retention: which backups to keep, grandfather-father-son."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from deploy.backup.common import NAME_PATTERN


def backup_time(path: Path) -> datetime | None:
    match = NAME_PATTERN.fullmatch(path.name)
    if match is None:
        return None
    return datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def backup_name(moment: datetime) -> str:
    return f"tempo-{moment.astimezone(UTC):%Y%m%dT%H%M%SZ}.age"


def to_keep(times: Iterable[datetime], *, daily: int, weekly: int, monthly: int
            ) -> set[datetime]:
    """Grandfather-father-son: the newest backup of each of the last ``daily`` days,
    ``weekly`` ISO weeks and ``monthly`` months that have one."""
    ordered = sorted(set(times), reverse=True)
    keep: set[datetime] = set()
    for count, period in ((daily, lambda t: t.date()),
                          (weekly, lambda t: t.isocalendar()[:2]),
                          (monthly, lambda t: (t.year, t.month))):
        periods: set[object] = set()
        for moment in ordered:
            key = period(moment)
            if key in periods:
                continue
            if len(periods) >= count:
                break
            periods.add(key)
            keep.add(moment)
    return keep


def prune(folder: Path, *, daily: int, weekly: int, monthly: int, dry_run: bool
          ) -> list[Path]:
    backups = {path: moment for path in folder.iterdir()
               if (moment := backup_time(path)) is not None}
    keep = to_keep(backups.values(), daily=daily, weekly=weekly, monthly=monthly)
    removed = sorted(path for path, moment in backups.items() if moment not in keep)
    if not dry_run:
        for path in removed:
            path.unlink()
    return removed

