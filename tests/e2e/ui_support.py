"""What the browser tests share: Debian's Chromium, a watch over every page for console
errors, CSP violations, unexpected HTTP errors and script dialogs, and small real media
files made on the spot (a playable H.264 MP4 included)."""

from __future__ import annotations

import asyncio
import inspect
import io
import re
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
XSS_CAPTION = "<img src=x onerror=alert(1)>"

# Runs before any script of the page: every CSP violation is kept and also reported as a
# console error, so either channel catches it.
WATCH_SCRIPT = """
(() => {
  window.__cspViolations = [];
  document.addEventListener('securitypolicyviolation', (event) => {
    const record = event.violatedDirective + ' blocked ' + (event.blockedURI || 'inline')
      + ' at ' + (event.sourceFile || '?') + ':' + event.lineNumber;
    window.__cspViolations.push(record);
    console.error('CSP violation: ' + record);
  }, true);
})();
"""

_RESOURCE_ERROR = re.compile(
    r"^Failed to load resource: the server responded with a status of (\d+)")


@dataclass
class Expected:
    method: str
    path: re.Pattern[str]
    status: int
    seen: int = 0


@dataclass
class PageWatch:
    """Collects everything that must not happen on a page.

    Chromium reports every HTTP error answer as a console error ("Failed to load
    resource"), including the ones the UI is built to handle (401 before signing in, a
    refused upload). A test declares those with ``expect``; such a console line is then
    accepted only for a URL whose answer was declared. Any other console error, any
    uncaught exception, any CSP violation, any undeclared 4xx/5xx and any script dialog
    (alert) is a problem.
    """

    name: str
    problems: list[str] = field(default_factory=list)
    expected: list[Expected] = field(default_factory=list)
    accepted_urls: dict[str, set[int]] = field(default_factory=dict)
    pending: set[asyncio.Future] = field(default_factory=set)

    def expect(self, method: str, path: str, status: int) -> None:
        self.expected.append(Expected(method.upper(), re.compile(path), status))

    def attach(self, page) -> None:
        page.on("console", self._on_console)
        page.on("pageerror", lambda error: self.problems.append(f"uncaught exception: {error}"))
        page.on("response", self._on_response)
        page.on("dialog", self._on_dialog)

    def _on_dialog(self, dialog) -> None:
        self.problems.append(f"script dialog {dialog.type}: {dialog.message!r}")
        dismissed = dialog.dismiss()
        if inspect.isawaitable(dismissed):
            task = asyncio.ensure_future(dismissed)
            self.pending.add(task)
            task.add_done_callback(self.pending.discard)

    def _on_response(self, response) -> None:
        status = response.status
        if status < 400:
            return
        method = response.request.method
        path = urlsplit(response.url).path
        for expected in self.expected:
            if expected.method == method and expected.status == status \
                    and expected.path.fullmatch(path):
                expected.seen += 1
                self.accepted_urls.setdefault(response.url, set()).add(status)
                return
        self.problems.append(f"unexpected HTTP {status} for {method} {response.url}")

    def _on_console(self, message) -> None:
        if message.type not in {"error", "assert"}:
            return
        text = message.text
        matched = _RESOURCE_ERROR.match(text)
        url = (message.location or {}).get("url", "")
        if matched and int(matched.group(1)) in self.accepted_urls.get(url, set()):
            return
        if matched:
            # The response event may come after the console line; judged again at the end.
            self.problems.append(f"@resource {url} {int(matched.group(1))} {text}")
            return
        self.problems.append(f"console {message.type}: {text} ({url})")

    def final_problems(self, csp_violations: list[str]) -> list[str]:
        problems = []
        for problem in self.problems:
            if problem.startswith("@resource "):
                _, url, status, text = problem.split(" ", 3)
                if int(status) in self.accepted_urls.get(url, set()):
                    continue
                problem = f"console error: {text} ({url})"
            problems.append(problem)
        problems.extend(f"CSP violation: {violation}" for violation in csp_violations)
        return problems


class Ui:
    """The browser side of one test: contexts (each its own cookie jar) and their pages,
    every one watched. ``check`` lists anything a watch collected."""

    def __init__(self, browser, base_url: str) -> None:
        self.browser = browser
        self.base_url = base_url
        self.opened: list[tuple[object, object, PageWatch]] = []

    def open(self, label: str, *, viewport: dict[str, int] | None = None,
             storage_state: dict | None = None):
        context = self.browser.new_context(
            base_url=self.base_url,
            viewport=viewport or {"width": 1280, "height": 900},
            user_agent=f"{USER_AGENT} TempoUiTest/{label}",
            storage_state=storage_state,
        )
        context.add_init_script(WATCH_SCRIPT)
        page = context.new_page()
        page.set_default_timeout(15_000)
        watch = PageWatch(label)
        watch.attach(page)
        self.opened.append((context, page, watch))
        return page, watch

    def check(self) -> list[str]:
        problems = []
        for _, page, watch in self.opened:
            violations: list[str] = []
            if not page.is_closed():
                assert_no_token_cookie(page)
                violations = page.evaluate("() => window.__cspViolations || []")
                # Server text is only ever inserted as text: an injected caption would
                # have become an <img src="x"> element.
                injected = page.evaluate("() => document.querySelectorAll('img[src=\"x\"]').length")
                if injected:
                    problems.append(f"[{watch.name}] server text was parsed as HTML")
            problems.extend(f"[{watch.name}] {p}" for p in watch.final_problems(violations))
        return problems

    def close(self) -> None:
        for context, _, _ in self.opened:
            context.close()


USER_AGENT = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/156.0.0.0 Safari/537.36")


def assert_no_token_cookie(page) -> None:
    """The session cookie is HttpOnly: page scripts can never read it."""
    cookies = page.evaluate("() => document.cookie")
    assert "authToken" not in cookies, f"document.cookie exposes the token: {cookies!r}"


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


# ----------------------------------------------------------------------- test media

def png_bytes(width: int = 64, height: int = 48,
              color: tuple[int, int, int] = (200, 60, 40)) -> bytes:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), color)
    draw = ImageDraw.Draw(image)
    draw.ellipse((width // 4, height // 4, 3 * width // 4, 3 * height // 4), fill=(250, 250, 250))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def jpeg_bytes(width: int = 80, height: int = 60,
               color: tuple[int, int, int] = (40, 90, 200)) -> bytes:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), color)
    ImageDraw.Draw(image).rectangle((8, 8, width // 2, height // 2), fill=(255, 210, 0))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return out.getvalue()


SVG_BYTES = (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" '
             b'height="10"><script>alert(1)</script><rect width="10" height="10"/></svg>\n')


class _Bits:
    def __init__(self) -> None:
        self.bits: list[int] = []

    def u(self, count: int, value: int) -> None:
        self.bits.extend((value >> (count - 1 - i)) & 1 for i in range(count))

    def ue(self, value: int) -> None:
        code = value + 1
        length = code.bit_length()
        self.u(length - 1, 0)
        self.u(length, code)

    def align_zero(self) -> None:
        while len(self.bits) % 8:
            self.bits.append(0)

    def trailing(self) -> None:
        self.bits.append(1)
        self.align_zero()

    def data(self) -> bytes:
        assert len(self.bits) % 8 == 0
        return bytes(int("".join(map(str, self.bits[i:i + 8])), 2)
                     for i in range(0, len(self.bits), 8))


def _escape(rbsp: bytes) -> bytes:
    """Emulation prevention: no 00 00 0x (x <= 3) inside a NAL unit."""
    out = bytearray()
    zeros = 0
    for byte in rbsp:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def _nal(kind: int, rbsp: bytes, ref_idc: int = 3) -> bytes:
    return bytes([(ref_idc << 5) | kind]) + _escape(rbsp)


def _box(kind: bytes, *payload: bytes) -> bytes:
    body = b"".join(payload)
    return struct.pack(">I", 8 + len(body)) + kind + body


def _full_box(kind: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    return _box(kind, struct.pack(">I", (version << 24) | flags), *payload)


def mp4_bytes(width: int = 64, height: int = 48, frames: int = 20, fps: int = 10) -> bytes:
    """A real, playable H.264 (Baseline, every macroblock I_PCM) MP4 of ``frames`` frames.

    I_PCM carries raw samples, so no encoder is needed; each frame is a key frame, so a
    player can seek to any of them. The picture is a bar that moves frame by frame."""
    mbs_w, mbs_h = width // 16, height // 16
    sps = _Bits()
    sps.u(8, 66)          # profile_idc: Baseline
    sps.u(8, 0)           # constraint flags
    sps.u(8, 30)          # level 3.0
    sps.ue(0)             # seq_parameter_set_id
    sps.ue(0)             # log2_max_frame_num_minus4
    sps.ue(2)             # pic_order_cnt_type
    sps.ue(1)             # max_num_ref_frames
    sps.u(1, 0)           # gaps_in_frame_num_value_allowed_flag
    sps.ue(mbs_w - 1)
    sps.ue(mbs_h - 1)
    sps.u(1, 1)           # frame_mbs_only_flag
    sps.u(1, 1)           # direct_8x8_inference_flag
    sps.u(1, 0)           # frame_cropping_flag
    sps.u(1, 0)           # vui_parameters_present_flag
    sps.trailing()
    sps_nal = _nal(7, sps.data())

    pps = _Bits()
    pps.ue(0)             # pic_parameter_set_id
    pps.ue(0)             # seq_parameter_set_id
    pps.u(1, 0)           # entropy_coding_mode_flag: CAVLC
    pps.u(1, 0)           # bottom_field_pic_order_in_frame_present_flag
    pps.ue(0)             # num_slice_groups_minus1
    pps.ue(0)             # num_ref_idx_l0_default_active_minus1
    pps.ue(0)             # num_ref_idx_l1_default_active_minus1
    pps.u(1, 0)           # weighted_pred_flag
    pps.u(2, 0)           # weighted_bipred_idc
    pps.ue(0)             # pic_init_qp_minus26 (se(0))
    pps.ue(0)             # pic_init_qs_minus26 (se(0))
    pps.ue(0)             # chroma_qp_index_offset (se(0))
    pps.u(1, 0)           # deblocking_filter_control_present_flag
    pps.u(1, 0)           # constrained_intra_pred_flag
    pps.u(1, 0)           # redundant_pic_cnt_present_flag
    pps.trailing()
    pps_nal = _nal(8, pps.data())

    samples = []
    for index in range(frames):
        slice_bits = _Bits()
        slice_bits.ue(0)      # first_mb_in_slice
        slice_bits.ue(7)      # slice_type: I (all slices of the picture)
        slice_bits.ue(0)      # pic_parameter_set_id
        slice_bits.u(4, 0)    # frame_num (log2_max_frame_num = 4)
        slice_bits.ue(index % 2)  # idr_pic_id: differs between consecutive IDR pictures
        slice_bits.u(1, 0)    # no_output_of_prior_pics_flag
        slice_bits.u(1, 0)    # long_term_reference_flag
        slice_bits.ue(0)      # slice_qp_delta (se(0))
        bar = (index * 4) % width
        for mb_y in range(mbs_h):
            for mb_x in range(mbs_w):
                slice_bits.ue(25)  # mb_type: I_PCM
                slice_bits.align_zero()
                for y in range(16):
                    for x in range(16):
                        px = mb_x * 16 + x
                        luma = 235 if bar <= px < bar + 6 else 40 + (mb_y * 16 + y) * 3
                        slice_bits.u(8, max(16, min(235, luma)))
                for _ in range(64):
                    slice_bits.u(8, 90)   # Cb
                for _ in range(64):
                    slice_bits.u(8, 170)  # Cr
        slice_bits.trailing()
        idr = _nal(5, slice_bits.data())
        samples.append(struct.pack(">I", len(idr)) + idr)

    timescale = fps * 100
    delta = 100
    duration = frames * delta
    avcc = _box(b"avcC", bytes([1, 66, 0, 30, 0xFF, 0xE1]), struct.pack(">H", len(sps_nal)),
                sps_nal, b"\x01", struct.pack(">H", len(pps_nal)), pps_nal)
    avc1 = _box(b"avc1", b"\x00" * 6, struct.pack(">H", 1), b"\x00" * 16,
                struct.pack(">HH", width, height), struct.pack(">II", 0x00480000, 0x00480000),
                b"\x00" * 4, struct.pack(">H", 1), b"\x00" * 32, struct.pack(">Hh", 0x18, -1),
                avcc)
    stsd = _full_box(b"stsd", 0, 0, struct.pack(">I", 1), avc1)
    stts = _full_box(b"stts", 0, 0, struct.pack(">III", 1, frames, delta))
    stsc = _full_box(b"stsc", 0, 0, struct.pack(">IIII", 1, 1, frames, 1))
    stsz = _full_box(b"stsz", 0, 0, struct.pack(">II", 0, frames),
                     b"".join(struct.pack(">I", len(s)) for s in samples))
    ftyp = _box(b"ftyp", b"isom", struct.pack(">I", 512), b"isomiso2avc1mp41")

    def build(chunk_offset: int) -> bytes:
        stco = _full_box(b"stco", 0, 0, struct.pack(">II", 1, chunk_offset))
        stbl = _box(b"stbl", stsd, stts, stsc, stsz, stco)
        vmhd = _full_box(b"vmhd", 0, 1, b"\x00" * 8)
        dref = _full_box(b"dref", 0, 0, struct.pack(">I", 1), _full_box(b"url ", 0, 1))
        minf = _box(b"minf", vmhd, _box(b"dinf", dref), stbl)
        hdlr = _full_box(b"hdlr", 0, 0, b"\x00" * 4, b"vide", b"\x00" * 12, b"VideoHandler\x00")
        mdhd = _full_box(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, timescale, duration,
                                                    0x55C4, 0))
        mdia = _box(b"mdia", mdhd, hdlr, minf)
        matrix = struct.pack(">9I", 0x00010000, 0, 0, 0, 0x00010000, 0, 0, 0, 0x40000000)
        tkhd = _full_box(b"tkhd", 0, 3, struct.pack(">IIIII", 0, 0, 1, 0, duration),
                         b"\x00" * 8, struct.pack(">hhHH", 0, 0, 0, 0), matrix,
                         struct.pack(">II", width << 16, height << 16))
        trak = _box(b"trak", tkhd, mdia)
        mvhd = _full_box(b"mvhd", 0, 0, struct.pack(">IIII", 0, 0, timescale, duration),
                         struct.pack(">IH", 0x00010000, 0x0100), b"\x00" * 10, matrix,
                         b"\x00" * 24, struct.pack(">I", 2))
        return _box(b"moov", mvhd, trak)

    moov = build(0)
    offset = len(ftyp) + len(moov) + 8
    moov = build(offset)
    mdat = _box(b"mdat", *samples)
    return ftyp + moov + mdat


GPX_TEMPLATE = """<?xml version="1.0" encoding="UTF-8"?>
<gpx version="1.1" creator="Strava" xmlns="http://www.topografix.com/GPX/1/1">
 <trk><name>{name}</name><trkseg>
  <trkpt lat="52.5200" lon="13.4050"><time>2024-05-01T07:00:00Z</time></trkpt>
  <trkpt lat="52.5210" lon="13.4060"><time>2024-05-01T07:00:10Z</time></trkpt>
 </trkseg></trk>
</gpx>
"""


def strava_export() -> bytes:
    """A small Strava export: two runs (one with a photo), a ride, and a run whose file is
    missing from the archive."""
    rows = [
        ("Activity ID", "Activity Date", "Activity Name", "Activity Type", "Elapsed Time",
         "Distance", "Filename", "Media"),
        ("1001", "May 1, 2024, 7:00:00 AM", "Morning Run", "Run", "1800", "5.2",
         "activities/1001.gpx", "media/track.jpg"),
        ("1002", "May 2, 2024, 6:30:00 PM", "Evening Ride", "Ride", "3600", "20.0",
         "activities/1002.gpx", ""),
        ("1003", "May 3, 2024, 7:15:00 AM", "Tempo Run", "Run", "2400", "8.1",
         "activities/1003.gpx", ""),
        ("1004", "May 4, 2024, 7:15:00 AM", "Lost Run", "Run", "2000", "6.0",
         "activities/1004.gpx", ""),
    ]
    csv_text = "\n".join(",".join(f'"{cell}"' for cell in row) for row in rows) + "\n"
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("activities.csv", csv_text)
        for activity_id, name in (("1001", "Morning Run"), ("1002", "Evening Ride"),
                                  ("1003", "Tempo Run")):
            archive.writestr(f"activities/{activity_id}.gpx", GPX_TEMPLATE.format(name=name))
        archive.writestr("media/track.jpg", jpeg_bytes(320, 240, (30, 140, 80)))
    return out.getvalue()
