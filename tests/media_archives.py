"""Archives for the import tests: real Strava-shaped exports and hostile ZIPs, built here."""

from __future__ import annotations

import csv
import gzip
import io
import random
import stat
import struct
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from PIL import Image

STRAVA_HEADER = [
    "Activity ID", "Activity Date", "Activity Name", "Activity Type", "Activity Description",
    "Elapsed Time", "Distance", "Max Heart Rate", "Relative Effort", "Commute",
    "Activity Private Note", "Activity Gear", "Filename", "Athlete Weight", "Bike Weight",
    "Elapsed Time", "Moving Time", "Distance", "Max Speed", "Average Speed", "Media",
]


@dataclass
class Row:
    activity_id: str
    activity_type: str = "Run"
    name: str = "Morning Run"
    date: str = "Jan 5, 2024, 7:03:12 AM"
    elapsed: str = "1800"
    distance_km: str = "5.01"
    distance_m: str = "5012.3"
    filename: str = ""
    media: list[str] = field(default_factory=list)


def activities_csv(rows: Iterable[Row], header: list[str] | None = None) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header or STRAVA_HEADER)
    for row in rows:
        writer.writerow([
            row.activity_id, row.date, row.name, row.activity_type, "", row.elapsed,
            row.distance_km, "", "", "false", "", "", row.filename, "", "",
            f"{row.elapsed}.0", row.elapsed, row.distance_m, "", "", "|".join(row.media),
        ])
    return out.getvalue().encode()


def gpx(points: int = 3, name: str = "Morning Run") -> bytes:
    track = "".join(
        f'<trkpt lat="52.{i:04d}" lon="4.{i:04d}"><ele>1.0</ele>'
        f"<time>2024-01-05T07:{i % 60:02d}:00Z</time></trkpt>"
        for i in range(points)
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<gpx version="1.1" creator="StravaGPX" xmlns="http://www.topografix.com/GPX/1/1">'
        f"<trk><name>{name}</name><type>9</type><trkseg>{track}</trkseg></trk></gpx>"
    ).encode()


def fit(payload: bytes = b"\x40\x00\x00\x00\x00\x01\x00\x00\x00" * 4) -> bytes:
    header = struct.pack("<BBHI4sH", 14, 0x20, 2132, len(payload), b".FIT", 0)
    return header + payload + b"\x00\x00"


def fit_gz(payload: bytes | None = None) -> bytes:
    return gzip.compress(fit(payload) if payload is not None else fit(), mtime=0)


def jpeg(color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (16, 12)
         ) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="JPEG")
    return out.getvalue()


def noise_jpeg(size: tuple[int, int] = (200, 200), seed: int = 1) -> bytes:
    """A JPEG that neither JPEG nor deflate can make small."""
    out = io.BytesIO()
    pixels = random.Random(seed).randbytes(size[0] * size[1] * 3)
    Image.frombytes("RGB", size, pixels).save(out, format="JPEG", quality=95)
    return out.getvalue()


def png(color: tuple[int, int, int] = (30, 30, 200)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (10, 10), color).save(out, format="PNG")
    return out.getvalue()


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE gpx [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<gpx version="1.1" xmlns="http://www.topografix.com/GPX/1/1"><trk><name>&lol9;</name></trk></gpx>
"""

XXE_PASSWD = b"""<?xml version="1.0"?>
<!DOCTYPE gpx [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<gpx version="1.1" xmlns="http://www.topografix.com/GPX/1/1"><trk><name>&xxe;</name></trk></gpx>
"""

HTML_PAGE = b"<!DOCTYPE html><html><body><script>alert(document.cookie)</script></body></html>"


def zip_bytes(entries: Iterable[tuple[str, bytes]],
              compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as archive:
        for name, data in entries:
            archive.writestr(zipfile.ZipInfo(name, (2024, 1, 5, 7, 0, 0)), data,
                             compress_type=compression)
    return out.getvalue()


def symlink_zip(name: str = "media/link.jpg", target: bytes = b"/etc/passwd") -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("activities.csv", activities_csv([]))
        info = zipfile.ZipInfo(name)
        info.create_system = 3
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(info, target)
    return out.getvalue()


def _central_offsets(data: bytes) -> dict[str, tuple[int, int]]:
    """Each entry's (local header offset, central header offset)."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        start = archive.start_dir
        result = {}
        position = start
        for info in archive.infolist():
            result[info.orig_filename] = (info.header_offset, position)
            name_len, extra_len, comment_len = struct.unpack_from("<HHH", data, position + 28)
            position += 46 + name_len + extra_len + comment_len
    return result


def with_flag_bit(data: bytes, name: str, bit: int = 0x1) -> bytes:
    """The archive with a general-purpose flag bit set by hand on one entry (both headers)."""
    local, central = _central_offsets(data)[name]
    patched = bytearray(data)
    for offset in (local + 6, central + 8):
        (flags,) = struct.unpack_from("<H", patched, offset)
        struct.pack_into("<H", patched, offset, flags | bit)
    return bytes(patched)


def with_declared_size(data: bytes, name: str, size: int) -> bytes:
    """The archive with one entry's uncompressed size rewritten in both headers (a lie)."""
    local, central = _central_offsets(data)[name]
    patched = bytearray(data)
    struct.pack_into("<I", patched, local + 22, size)
    struct.pack_into("<I", patched, central + 24, size)
    return bytes(patched)


def ratio_bomb(size: int = 20 * 1024 * 1024) -> bytes:
    return zip_bytes([("activities.csv", activities_csv([])),
                      ("media/bomb.jpg", b"\x00" * size)])


def _local_header(name: bytes, data: bytes, crc: int, size: int, method: int = 0) -> bytes:
    return struct.pack("<4s2B4HL2L2H", b"PK\x03\x04", 20, 0, 0, method, 0, 0x21,
                       crc, len(data), size, len(name), 0) + name


def _central_header(name: bytes, crc: int, csize: int, size: int, offset: int,
                    method: int = 0) -> bytes:
    return struct.pack("<4s4B4HL2L5H2L", b"PK\x01\x02", 20, 3, 20, 0, 0, method, 0, 0x21,
                       crc, csize, size, len(name), 0, 0, 0, 0, 0o644 << 16, offset) + name


def _end_record(count: int, cd_size: int, cd_offset: int) -> bytes:
    return struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count, cd_size, cd_offset, 0)


def overlap_bomb(kernel: bytes | None = None, layers: int = 8) -> bytes:
    """The overlapping-entries shape: each entry's stored data is the next entry's local
    header followed by that entry's data, and the last holds one deflated kernel. Every
    central-directory entry is honest about its own bytes; they just share them."""
    # Incompressible by default, so that only the overlap can give the shape away.
    kernel = random.Random(1).randbytes(64 * 1024) if kernel is None else kernel
    kernel_size = len(kernel)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    deflated = compressor.compress(kernel) + compressor.flush()
    kernel_crc = zlib.crc32(kernel)
    names = [f"media/{index:02d}.jpg".encode() for index in range(layers)]
    # Build from the innermost entry outwards.
    body = _local_header(names[-1], deflated, kernel_crc, kernel_size, method=8) + deflated
    headers = [(names[-1], kernel_crc, len(deflated), kernel_size, 8)]
    for name in reversed(names[:-1]):
        crc = zlib.crc32(body)
        headers.append((name, crc, len(body), len(body), 0))
        body = _local_header(name, body, crc, len(body)) + body
    headers.reverse()
    central = b""
    offset = 0
    for name, crc, csize, size, method in headers:
        central += _central_header(name, crc, csize, size, offset, method)
        offset += 30 + len(name)
    return body + central + _end_record(len(headers), len(central), len(body))
