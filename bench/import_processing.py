"""Import processing: a generated Strava export of 5,000 activities and 2,000 photos.

The archive is uploaded through the gateway; what is timed is media's background
processing, from the import's ``startedAt`` to its ``finishedAt``. The reference, in the
same run, is the least any import has to do with the same archive: read every entry,
SHA-256 it, write it to its own file on the media root's filesystem and fsync it. Each
round uses a new archive (other ids, other bytes), so no round is a re-run of duplicates.
Media's resident memory is sampled from the upload to the end of processing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import time
import zipfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from bench.common import (
    AUTH_COOKIE,
    MB,
    PeakRss,
    Report,
    Result,
    curl_upload,
    http,
    ratios,
    register_and_login,
    say,
    spread,
    stack,
    work_dir,
)
from bench.payloads import CHUNK, write_strava_export

NAME = "imports"
TARGETS = (
    ("import_entries_vs_reference", 0.5, True),
    ("media_import_peak_rss_mb", 100.0, False),
)
ORIGIN = "https://bench.example"
FULL = {"activities": 5000, "photos": 2000}
QUICK = {"activities": 500, "photos": 200}


@dataclass(frozen=True, slots=True)
class Processed:
    entries_per_second: float
    seconds: float
    peak_rss: int = 0
    summary: str = ""

    def __str__(self) -> str:
        text = f"{self.entries_per_second:.0f} entries/s ({self.seconds:.1f} s)"
        if self.peak_rss:
            text += f", media peak RSS {self.peak_rss / MB:.1f} MiB"
        return text + (f", {self.summary}" if self.summary else "")


def reference(archive: Path, folder: Path) -> Processed:
    """Every entry read, hashed, written to its own file and fsynced."""
    target = folder / "reference"
    target.mkdir()
    started = time.perf_counter()
    count = 0
    with zipfile.ZipFile(archive) as source:
        for index, info in enumerate(source.infolist()):
            digest = hashlib.sha256()
            descriptor = os.open(target / str(index), os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                                 0o600)
            try:
                with source.open(info) as reader:
                    while chunk := reader.read(CHUNK):
                        digest.update(chunk)
                        os.write(descriptor, chunk)
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
            count += 1
    elapsed = time.perf_counter() - started
    shutil.rmtree(target)
    return Processed(count / elapsed, elapsed)


def _timestamp(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class Importer:
    def __init__(self, base_url: str, token: str, media_pid: int) -> None:
        self.base_url = base_url
        self.headers = {"Cookie": f"{AUTH_COOKIE}={token}", "Origin": ORIGIN}
        self.media_pid = media_pid

    def run(self, archive: Path, entries: int) -> Processed:
        with PeakRss({"media": self.media_pid}) as memory:
            answer = curl_upload(f"{self.base_url}/api/imports", archive, filename="export.zip",
                                 content_type="application/zip", headers=self.headers)
            if answer.status != 202:
                raise RuntimeError(f"import answered {answer.status}: {answer.body[:300]!r}")
            import_id = json.loads(answer.body)["id"]
            accepted = time.monotonic()
            state = self.wait(import_id)
            finished = time.monotonic()
        if state.get("status") != "done":
            raise RuntimeError(f"the import ended {state.get('status')}: "
                               f"{json.dumps(state)[:600]}")
        started_at, finished_at = _timestamp(state.get("startedAt")), _timestamp(
            state.get("finishedAt"))
        seconds = (finished_at - started_at if started_at and finished_at
                   else finished - accepted)
        progress = state.get("progress") or {}
        total = progress.get("entriesTotal") or entries
        summary = state.get("summary") or {}
        text = (f"{summary.get('activitiesImported')} activities, "
                f"{summary.get('mediaImported')} media, skipped {summary.get('skipped')}")
        return Processed(total / seconds, seconds, memory.peaks["media"], text)

    def wait(self, import_id: str, timeout: float = 900.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = http("GET", f"{self.base_url}/api/imports/{import_id}",
                         headers=self.headers).json()
            if state.get("status") in {"done", "failed", "cancelled"}:
                return state
            time.sleep(0.2)
        raise RuntimeError(f"the import did not finish within {timeout:.0f} s")


async def run(quick: bool) -> Report:
    rounds = 3
    shape = QUICK if quick else FULL
    with work_dir("imports-") as folder:
        archives = []
        for salt in range(rounds):
            path = folder / f"export-{salt}.zip"
            info = await asyncio.to_thread(write_strava_export, path, salt=salt + 1, **shape)
            archives.append((path, info))
        say(f"imports: {rounds} archives of {shape['activities']} activities and "
            f"{shape['photos']} photos ({archives[0][1]['bytes'] / MB:.1f} MiB each)")
        settings = {"CORS__AllowedOrigins": ORIGIN, "RateLimit__GlobalPerMinute": "1000000",
                    "RateLimit__GlobalBurst": "100000"}
        async with stack(folder / "stack", env=settings) as running:
            base_url = running.url
            token = await asyncio.to_thread(register_and_login, base_url)
            importer = Importer(base_url, token, running.pid("media"))
            measured: dict[str, list[Processed]] = {"reference": [], "import": []}
            for number, (path, info) in enumerate(archives, 1):
                ref = await asyncio.to_thread(reference, path, folder)
                say(f"  round {number}/{rounds} reference: {ref}")
                done = await asyncio.to_thread(importer.run, path, info["entries"])
                say(f"  round {number}/{rounds} import: {done}")
                measured["reference"].append(ref)
                measured["import"].append(done)
    return report(measured, shape, archives[0][1], quick=quick)


def report(measured: dict[str, list[Processed]], shape: dict[str, int], info: dict[str, int],
           *, quick: bool) -> Report:
    ref = [p.entries_per_second for p in measured["reference"]]
    imp = [p.entries_per_second for p in measured["import"]]
    ratio = ratios(imp, ref)
    peak = max(p.peak_rss for p in measured["import"]) / MB
    out = Report("Import processing", header=(
        "archive", "reference entries/s", "import entries/s", "import / reference",
        "media peak RSS MiB"))
    out.rows.append((f"{shape['activities']} activities + {shape['photos']} photos "
                     f"({info['entries']} entries, {info['bytes'] / MB:.1f} MiB)",
                     str(spread(ref)), str(spread(imp)), str(ratio), f"{peak:.1f}"))
    out.notes += [
        f"last import: {measured['import'][-1].summary}",
        "import time is the server's startedAt → finishedAt; the reference reads, hashes, "
        "writes and fsyncs every entry of the same archive",
        f"{len(imp)} interleaved rounds, a new archive each"
        + (" (quick: a smaller archive)" if quick else ""),
    ]
    out.results += [
        Result("import_entries_vs_reference", ratio.median, 0.5),
        Result("media_import_peak_rss_mb", peak, 100.0, higher=False),
    ]
    return out
