"""Rows against files: what the sweeper reports and what ``fsck`` checks and repairs.

Races with live traffic are avoided by construction: rows are read before the disk is
scanned (a committed row always had its file placed first), files younger than the grace
period are not called orphans (an upload may be between rename and commit), and every
finding is checked again against the database before it is reported or repaired.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from uuid import UUID

import asyncpg
import structlog

from services.media import store
from services.media.storage import MediaStorage, Scan, StoredFile, file_sha256

log = structlog.get_logger("media.consistency")

MISSING = "missing_file"
SIZE_MISMATCH = "size_mismatch"
HASH_MISMATCH = "sha256_mismatch"


@dataclass(frozen=True, slots=True)
class BrokenRow:
    item: store.MediaItem
    reason: str
    detail: str = ""


@dataclass(slots=True)
class Report:
    rows_checked: int = 0
    files_checked: int = 0
    stale_temps: list[Path] = field(default_factory=list)
    # Regular files in the owner area without a row: removed by a repair.
    orphan_files: list[Path] = field(default_factory=list)
    # Directories, links or devices where only files belong: reported, never removed.
    unexpected_entries: list[Path] = field(default_factory=list)
    broken_rows: list[BrokenRow] = field(default_factory=list)
    # Rows a repair marked earlier that are still broken: known, so not a new problem.
    known_broken: list[BrokenRow] = field(default_factory=list)
    # Rows marked broken whose file is whole again.
    recovered: list[store.MediaItem] = field(default_factory=list)
    repaired: bool = False

    @property
    def all_well(self) -> bool:
        return not (self.stale_temps or self.orphan_files or self.unexpected_entries
                    or self.broken_rows)


async def _rows(pool: asyncpg.Pool) -> dict[tuple[UUID, UUID], store.MediaItem]:
    rows: dict[tuple[UUID, UUID], store.MediaItem] = {}
    async with pool.acquire() as connection, connection.transaction(readonly=True):
        async for item in store.iter_all_media(connection):
            rows[(item.owner_id, item.id)] = item
    return rows


async def _row_problem(item: store.MediaItem, stored: StoredFile | None,
                       verify_content: bool) -> BrokenRow | None:
    if stored is None:
        return BrokenRow(item, MISSING)
    if stored.size != item.size_bytes:
        return BrokenRow(item, SIZE_MISMATCH,
                         f"{stored.size} bytes on disk, {item.size_bytes} recorded")
    if not verify_content:
        return None
    loop = asyncio.get_running_loop()
    try:
        actual = await loop.run_in_executor(None, file_sha256, stored.path)
    except FileNotFoundError:
        return BrokenRow(item, MISSING)
    if actual != item.sha256:
        return BrokenRow(item, HASH_MISMATCH, f"sha256 on disk {actual}")
    return None


async def check(pool: asyncpg.Pool, storage: MediaStorage, *, grace_seconds: float,
                temp_max_age_seconds: float, verify_content: bool,
                now: float | None = None) -> Report:
    """Compare rows and files. ``verify_content`` also re-hashes every file (slow)."""
    loop = asyncio.get_running_loop()
    now = time.time() if now is None else now
    report = Report()
    rows = await _rows(pool)
    scan: Scan = await loop.run_in_executor(None, storage.scan)
    report.stale_temps = await loop.run_in_executor(None, storage.stale_temps,
                                                    temp_max_age_seconds, now)
    report.rows_checked = len(rows)
    report.files_checked = len(scan.files)

    files = {(f.owner_id, f.media_id): f for f in scan.files}
    suspects: list[BrokenRow] = []
    for key, item in rows.items():
        problem = await _row_problem(item, files.get(key), verify_content)
        if problem is not None:
            suspects.append(problem)
        elif item.broken_at is not None and verify_content:
            report.recovered.append(item)

    orphan_suspects = [f for key, f in files.items()
                       if key not in rows and now - f.mtime > grace_seconds]
    async with pool.acquire() as connection:
        for suspect in suspects:
            # Deleted meanwhile: its file went after the row, which is not a problem.
            if not await store.media_exists(connection, suspect.item.owner_id, suspect.item.id):
                continue
            if suspect.item.broken_at is not None:
                report.known_broken.append(suspect)
            else:
                report.broken_rows.append(suspect)
        for orphan in orphan_suspects:
            if not await store.media_exists(connection, orphan.owner_id, orphan.media_id):
                report.orphan_files.append(orphan.path)
    for stray in scan.strays:
        if not stray.regular_file:
            report.unexpected_entries.append(stray.path)
        elif now - stray.mtime > grace_seconds:
            report.orphan_files.append(stray.path)
    return report


async def repair(pool: asyncpg.Pool, storage: MediaStorage, report: Report) -> None:
    """Remove orphan and stale temporary files, mark broken rows, unmark recovered ones."""
    for path in [*report.stale_temps, *report.orphan_files]:
        await storage.remove_path(path)
    async with pool.acquire() as connection:
        for broken in report.broken_rows:
            await store.mark_broken(connection, broken.item.id, broken.reason)
        for item in report.recovered:
            await store.clear_broken(connection, item.id)
    report.repaired = True


def summary_lines(report: Report) -> list[str]:
    def verb(count: int) -> str:
        return " (removed)" if report.repaired and count else ""

    lines = [
        f"rows checked: {report.rows_checked}",
        f"files checked: {report.files_checked}",
        f"stale temporary files: {len(report.stale_temps)}{verb(len(report.stale_temps))}",
    ]
    lines += [f"  {path}" for path in report.stale_temps]
    lines.append(f"files without rows: {len(report.orphan_files)}"
                 f"{verb(len(report.orphan_files))}")
    lines += [f"  {path}" for path in report.orphan_files]
    lines.append(f"unexpected entries (not removed): {len(report.unexpected_entries)}")
    lines += [f"  {path}" for path in report.unexpected_entries]
    marked = " (marked broken)" if report.repaired and report.broken_rows else ""
    lines.append(f"broken rows: {len(report.broken_rows)}{marked}")
    lines += [f"  {b.item.id} owner {b.item.owner_id}: {b.reason}"
              f"{' - ' + b.detail if b.detail else ''}" for b in report.broken_rows]
    lines.append(f"rows already marked broken: {len(report.known_broken)}")
    lines += [f"  {b.item.id} owner {b.item.owner_id}: {b.reason}" for b in report.known_broken]
    if report.recovered:
        lines.append(f"rows whole again: {len(report.recovered)}"
                     f"{' (unmarked)' if report.repaired else ''}")
    lines.append("all well" if report.all_well else "problems found")
    return lines
