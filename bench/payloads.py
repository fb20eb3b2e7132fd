"""Files the benchmarks upload, generated on the spot: photos, archives, Strava exports."""

from __future__ import annotations

import csv
import io
import os
import random
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

CHUNK = 1024 * 1024


def small_jpeg(seed: int = 0, size: tuple[int, int] = (64, 48)) -> bytes:
    """A real JPEG (Pillow), different for each seed."""
    from PIL import Image

    rng = random.Random(seed)
    image = Image.new("RGB", size, (rng.randrange(256), rng.randrange(256), rng.randrange(256)))
    for _ in range(8):
        x, y = rng.randrange(size[0]), rng.randrange(size[1])
        image.putpixel((x, y), (rng.randrange(256), rng.randrange(256), rng.randrange(256)))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=80)
    return out.getvalue()


def filler_chunks(total: int, seed: int = 1) -> Iterator[bytes]:
    """``total`` bytes of incompressible filler in 1 MiB chunks, without a single ``<``.

    Media looks for markup in the first bytes of an upload; filler with no ``<`` can never
    look like a tag, wherever the window falls.
    """
    rng = random.Random(seed)
    block = bytearray(rng.randbytes(CHUNK))
    for index, value in enumerate(block):
        if value == 0x3C:
            block[index] = 0x3D
    remaining = total
    while remaining > 0:
        piece = bytes(block[:min(CHUNK, remaining)])
        remaining -= len(piece)
        yield piece


def write_photo(path: Path, total: int) -> Path:
    """A valid JPEG of exactly ``total`` bytes: a real small image followed by filler.

    Media judges content by its first bytes and never decodes the whole image, so the
    bytes after the image's end marker are carried like any other payload.
    """
    head = small_jpeg()
    with path.open("wb") as out:
        out.write(head)
        for chunk in filler_chunks(total - len(head)):
            out.write(chunk)
    return path


def write_filler_zip(path: Path, total: int) -> Path:
    """A valid ZIP of about ``total`` bytes: one stored entry of filler.

    It is not a Strava export, so an import of it ends soon after the upload with a clear
    error instead of keeping the machine busy while the next transfer is measured.
    """
    entry_size = total - 256
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        info = zipfile.ZipInfo("filler.bin", date_time=(2024, 1, 1, 0, 0, 0))
        with archive.open(info, "w", force_zip64=True) as entry:
            for chunk in filler_chunks(entry_size, seed=2):
                entry.write(chunk)
    return path


def gpx(seed: int, start: datetime, points: int = 20) -> bytes:
    rng = random.Random(seed)
    lat, lon = 52.0 + rng.random() / 10, 4.0 + rng.random() / 10
    rows = []
    for index in range(points):
        moment = (start + timedelta(seconds=5 * index)).strftime("%Y-%m-%dT%H:%M:%SZ")
        rows.append(f'<trkpt lat="{lat + index * 1e-4:.6f}" lon="{lon + index * 1e-4:.6f}">'
                    f"<ele>{rng.uniform(0, 30):.1f}</ele><time>{moment}</time></trkpt>")
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            '<gpx version="1.1" creator="StravaGPX" xmlns="http://www.topografix.com/GPX/1/1">'
            f"<metadata><time>{start:%Y-%m-%dT%H:%M:%SZ}</time></metadata>"
            f"<trk><name>Run {seed}</name><type>running</type><trkseg>"
            + "".join(rows) + "</trkseg></trk></gpx>\n").encode()


def write_strava_export(path: Path, *, activities: int, photos: int,
                        salt: int = 0) -> dict[str, int]:
    """A Strava-shaped export: ``activities.csv``, one GPX per activity, ``photos`` JPEGs
    spread over the first activities. Each ``salt`` gives other ids and other bytes, so a
    second archive is new work rather than a set of duplicates. Returns its counts."""
    header = ["Activity ID", "Activity Date", "Activity Name", "Activity Type",
              "Activity Description", "Elapsed Time", "Distance", "Filename", "Media"]
    start = datetime(2023, 1, 1, 6, 30, tzinfo=UTC)
    rows = []
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for index in range(activities):
            activity_id = 9_000_000_000 + salt * 1_000_000 + index
            when = start + timedelta(hours=9 * index)
            filename = f"activities/{activity_id}.gpx"
            seed = salt * 1_000_000 + index
            archive.writestr(zipfile.ZipInfo(filename, date_time=(2024, 1, 1, 0, 0, 0)),
                             gpx(seed, when), compress_type=zipfile.ZIP_DEFLATED)
            media = ""
            if index < photos:
                media = f"media/{activity_id}-{index}.jpg"
                archive.writestr(zipfile.ZipInfo(media, date_time=(2024, 1, 1, 0, 0, 0)),
                                 small_jpeg(seed=seed + 1), compress_type=zipfile.ZIP_STORED)
            rows.append([str(activity_id), when.strftime("%b %d, %Y, %I:%M:%S %p"),
                         f"Morning Run {index}", "Run", "", str(1800 + index % 900),
                         f"{5 + (index % 100) / 10:.2f}", filename, media])
        text = io.StringIO()
        writer = csv.writer(text)
        writer.writerow(header)
        writer.writerows(rows)
        archive.writestr("activities.csv", text.getvalue())
    return {"activities": activities, "photos": photos,
            "entries": activities + photos + 1, "bytes": os.path.getsize(path)}
