"""The background sweeper: at start and then on a schedule, remove stale temporary files
and report (never delete) files without rows and rows without files."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import structlog
from aiohttp import web
from prometheus_client import Gauge

from services.media import consistency
from services.media.keys import MEDIA_SETTINGS, STORAGE
from shared.keys import DB_POOL
from shared.periodic import periodic

log = structlog.get_logger("media.sweeper")

# Reported ids per log line; the counts are always complete.
REPORT_SAMPLE = 20

ORPHAN_FILES = Gauge("tempo_media_orphan_files", "Stored files without a database row")
MISSING_FILES = Gauge("tempo_media_broken_rows",
                      "Media rows whose file is missing or of the wrong size")


@dataclass(slots=True)
class SweepState:
    """How many sweeps have finished, and the last one's findings."""

    runs: int = 0
    last: consistency.Report | None = None
    finished: asyncio.Event = field(default_factory=asyncio.Event)


SWEEP_STATE = web.AppKey("media_sweep_state", SweepState)


async def sweep(app: web.Application) -> consistency.Report:
    settings = app[MEDIA_SETTINGS].storage
    storage = app[STORAGE]
    report = await consistency.check(
        app[DB_POOL], storage, grace_seconds=settings.orphan_grace_seconds,
        temp_max_age_seconds=settings.temp_max_age_seconds, verify_content=False,
    )
    for path in report.stale_temps:
        await storage.remove_path(path)
    if report.stale_temps:
        log.info("stale_temp_files_removed", count=len(report.stale_temps))
    ORPHAN_FILES.set(len(report.orphan_files) + len(report.unexpected_entries))
    MISSING_FILES.set(len(report.broken_rows))
    if report.orphan_files or report.unexpected_entries:
        log.warning("media_files_without_rows",
                    count=len(report.orphan_files) + len(report.unexpected_entries),
                    paths=[str(p) for p in
                           [*report.orphan_files, *report.unexpected_entries][:REPORT_SAMPLE]],
                    action="run: python -m services.media fsck --repair")
    if report.broken_rows:
        log.warning("media_rows_without_files", count=len(report.broken_rows),
                    media=[{"id": str(b.item.id), "reason": b.reason}
                           for b in report.broken_rows[:REPORT_SAMPLE]],
                    action="run: python -m services.media fsck --repair")
    return report


async def _sweep_once(app: web.Application) -> None:
    state = app[SWEEP_STATE]
    try:
        state.last = await sweep(app)
    except asyncio.CancelledError:
        raise
    except Exception:  # a failed sweep must not end the schedule
        log.exception("sweep_failed")
    state.runs += 1
    state.finished.set()


async def sweeper_context(app: web.Application) -> AsyncIterator[None]:
    """A cleanup context: sweep once at start (in the background), then every interval."""
    app[SWEEP_STATE] = SweepState()
    async with periodic("media-sweeper", app[MEDIA_SETTINGS].storage.sweep_interval_seconds,
                        lambda: _sweep_once(app)):
        yield
