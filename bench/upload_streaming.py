"""Upload streaming: photos and an import through nginx → gateway → media, against raw disk.

The reference is this machine's own disk in the same run: Python copying the same bytes
from the same (cached) source file into a file on the media root's filesystem, in 1 MiB
writes, with fsync, as media must do before it answers. Each size alternates reference and
upload (A B A B ...). While each upload runs, the resident memory of the gateway's and
media's process trees is sampled every 20 ms: streaming means a 500 MB transfer costs the
same memory as a 5 MB one.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import (
    AUTH_COOKIE,
    MB,
    PeakRss,
    Processes,
    Report,
    Result,
    curl_upload,
    free_port,
    http,
    interleave,
    ratios,
    register_and_login,
    say,
    spread,
    stack,
    start_nginx,
    strong_secret,
    tree_cpu_seconds,
    tree_rss,
    wait_http,
    work_dir,
)
from bench.payloads import CHUNK, write_filler_zip, write_photo

NAME = "uploads"
TARGETS = (
    ("upload_photo_50mb_vs_disk", 0.5, True),
    ("upload_import_500mb_vs_disk", 0.5, True),
    ("gateway_upload_peak_rss_mb", 100.0, False),
    ("media_upload_peak_rss_mb", 100.0, False),
    ("gateway_rss_growth_5_to_500mb_mb", 5.0, False),
    ("media_rss_growth_5_to_500mb_mb", 5.0, False),
)
ORIGIN = "https://bench.example"
MEGABYTE = 1_000_000


@dataclass(frozen=True, slots=True)
class Transfer:
    label: str
    size: int
    kind: str  # "photo" or "import"


TRANSFERS = (
    Transfer("5 MB photo", 5_000_000, "photo"),
    Transfer("50 MB photo", 50_000_000, "photo"),
    # The import limit is 500,000,000 bytes of file; the archive stays just under it.
    Transfer("500 MB import", 499_000_000, "import"),
)


@dataclass(frozen=True, slots=True)
class Sample:
    mb_per_s: float
    gateway_rss: int = 0
    media_rss: int = 0
    # CPU seconds per 100 MB moved, by process tree: who the transfer keeps busy.
    cpu_per_100mb: tuple[tuple[str, float], ...] = ()

    def __str__(self) -> str:
        if not self.gateway_rss:
            return f"{self.mb_per_s:.0f} MB/s"
        cpu = ", ".join(f"{name} {seconds:.2f}" for name, seconds in self.cpu_per_100mb)
        return (f"{self.mb_per_s:.0f} MB/s, peak RSS gateway {self.gateway_rss / MB:.1f} MiB, "
                f"media {self.media_rss / MB:.1f} MiB, CPU s/100 MB: {cpu}")


def raw_disk(source: Path, folder: Path) -> Sample:
    """Copy ``source`` into ``folder`` with 1 MiB writes and fsync: the disk's own speed."""
    target = folder / "raw-copy"
    started = time.perf_counter()
    with source.open("rb") as reader, target.open("wb") as writer:
        while chunk := reader.read(CHUNK):
            writer.write(chunk)
        writer.flush()
        os.fsync(writer.fileno())
    elapsed = time.perf_counter() - started
    target.unlink()
    return Sample(source.stat().st_size / MEGABYTE / elapsed)


def nginx_block(listen_port: int, gateway_port: int) -> str:
    # As in production (deploy/nginx/nginx.conf): bodies stream to the gateway instead of
    # being spooled to disk, read from the client in up to 256 KiB at a time.
    return f"""
    upstream gateway {{ server 127.0.0.1:{gateway_port}; keepalive 16; }}
    server {{
        listen 127.0.0.1:{listen_port};
        client_max_body_size 600m;
        proxy_request_buffering off;
        client_body_buffer_size 256k;
        proxy_buffering off;
        proxy_http_version 1.1;
        proxy_read_timeout 600s;
        proxy_send_timeout 600s;
        location / {{
            proxy_pass http://gateway;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
    }}
"""


class Uploader:
    """Uploads through the front door (nginx → gateway → media) or straight to media.

    The direct path, with the internal identity the gateway would add, is not a target:
    it tells how much of the gap to raw disk is media's own and how much the hops in front.
    """

    def __init__(self, front_url: str, media_url: str, token: str, internal_key: str,
                 pids: dict[str, int], imports: bool, cpu_pids: dict[str, int]) -> None:
        from shared.config import KeySet, Secret
        from shared.identity import internal_codec

        self.front_url = front_url
        self.media_url = media_url
        self.cookie = {"Cookie": f"{AUTH_COOKIE}={token}", "Origin": ORIGIN}
        self.claims = unverified_claims(token)
        self.codec = internal_codec(KeySet(Secret(internal_key)), "media")
        self.pids = pids
        self.imports = imports
        self.cpu_pids = cpu_pids

    def headers(self, direct: bool) -> dict[str, str]:
        if not direct:
            return self.cookie
        from shared.identity import INTERNAL_TOKEN_HEADER, mint_internal_token

        token = mint_internal_token(self.codec, audience="media", user_id=self.claims["sub"],
                                    session_id=self.claims["jti"], client_ip="127.0.0.1",
                                    user_agent="tempo-bench")
        return {INTERNAL_TOKEN_HEADER: token}

    def base(self, direct: bool) -> str:
        return self.media_url if direct else f"{self.front_url}/api"

    def upload(self, transfer: Transfer, source: Path, *, direct: bool = False) -> Sample:
        as_import = transfer.kind == "import" and self.imports
        if as_import:
            path, filename, mime = "/imports", "export.zip", "application/zip"
        else:
            path, filename, mime = "/media", "photo.jpg", "image/jpeg"
        headers = self.headers(direct)
        before = {name: tree_cpu_seconds(pid) for name, pid in self.cpu_pids.items()}
        with PeakRss(self.pids) as memory:
            answer = curl_upload(f"{self.base(direct)}{path}", source, filename=filename,
                                 content_type=mime, headers=headers)
        hundreds = transfer.size / (100 * MEGABYTE)
        cpu = tuple((name, (tree_cpu_seconds(pid) - before[name]) / hundreds)
                    for name, pid in self.cpu_pids.items())
        if answer.status not in (201, 202):
            raise RuntimeError(f"{transfer.label} answered {answer.status}: {answer.body[:300]!r}")
        self.clean_up(answer.body, as_import, direct)
        return Sample(transfer.size / MEGABYTE / answer.seconds, memory.peaks["gateway"],
                      memory.peaks["media"], cpu)

    def clean_up(self, body: bytes, as_import: bool, direct: bool) -> None:
        """Not timed: remove what was stored, and let an import finish before the next run."""
        answer = json.loads(body)
        base = self.base(direct)
        if as_import:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                state = http("GET", f"{base}/imports/{answer['id']}",
                             headers=self.headers(direct)).json()
                if state.get("status") in {"done", "failed", "cancelled"}:
                    return
                time.sleep(0.5)
            raise RuntimeError("the import did not finish within 300 s")
        for item in answer.get("items", []):
            http("DELETE", f"{base}/media/{item['id']}", headers=self.headers(direct))


def unverified_claims(token: str) -> dict[str, str]:
    """The user token's subject and id, to mint the identity the gateway would mint."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


async def run(quick: bool) -> Report:
    rounds = 3 if quick else 5
    with work_dir("uploads-") as folder, Processes(folder) as processes:
        sources = folder / "sources"
        raw_folder = folder / "raw"
        sources.mkdir()
        raw_folder.mkdir()
        files = {}
        for transfer in TRANSFERS:
            path = sources / f"{transfer.size}.{'zip' if transfer.kind == 'import' else 'jpg'}"
            writer = write_filler_zip if transfer.kind == "import" else write_photo
            files[transfer.label] = await asyncio.to_thread(writer, path, transfer.size)
        internal_key = strong_secret()
        settings = {
            "Internal__SecretKey": internal_key,
            "CORS__AllowedOrigins": ORIGIN,
            "RateLimit__GlobalPerMinute": "1000000",
            "RateLimit__GlobalBurst": "100000",
            # Where the import feature is missing, the 500 MB transfer goes to /api/media.
            "MediaStorage__MaxFileSizeBytes": "600000000",
        }
        async with stack(folder / "stack", env=settings) as running:
            gateway_port = int(running.url.rsplit(":", 1)[1])
            listen = free_port()
            nginx = start_nginx(processes, "nginx", folder / "nginx",
                                nginx_block(listen, gateway_port))
            base_url = f"http://127.0.0.1:{listen}"
            await asyncio.to_thread(wait_http, f"{base_url}/health", process=nginx)
            token = await asyncio.to_thread(register_and_login, base_url)
            probe = await asyncio.to_thread(http, "GET", f"{base_url}/api/imports",
                                            headers={"Cookie": f"{AUTH_COOKIE}={token}"})
            imports = probe.status == 200
            pids = {"gateway": running.pid("gateway"), "media": running.pid("media")}
            idle = {name: tree_rss(pid) for name, pid in pids.items()}
            uploader = Uploader(base_url, running.service_url("media"), token, internal_key,
                                pids, imports,
                                {**pids, "nginx": nginx.pid})
            say(f"uploads: {rounds} rounds per size; imports "
                f"{'available' if imports else 'missing: 500 MB goes to /api/media'}")
            measured: dict[str, dict[str, list[Sample]]] = {}
            for transfer in TRANSFERS:
                source = files[transfer.label]
                variants = {
                    "raw disk": lambda source=source: raw_disk(source, raw_folder),
                    "upload": lambda transfer=transfer, source=source: uploader.upload(
                        transfer, source),
                    "media direct": lambda transfer=transfer, source=source: uploader.upload(
                        transfer, source, direct=True),
                }
                say(f"-- {transfer.label}")
                measured[transfer.label] = await asyncio.to_thread(interleave, variants, rounds)
    return report(measured, idle, imports=imports, rounds=rounds, quick=quick)


def report(measured: dict[str, dict[str, list[Sample]]], idle: dict[str, int], *,
           imports: bool, rounds: int, quick: bool) -> Report:
    out = Report("Upload streaming (nginx → gateway → media)", header=(
        "transfer", "raw disk MB/s", "upload MB/s", "upload / disk", "media direct MB/s",
        "upload / media direct", "gateway peak RSS MiB", "media peak RSS MiB"))
    ratio_by: dict[str, float] = {}
    peaks: dict[str, dict[str, float]] = {}
    for transfer in TRANSFERS:
        samples = measured[transfer.label]
        disk = [s.mb_per_s for s in samples["raw disk"]]
        up = [s.mb_per_s for s in samples["upload"]]
        direct = [s.mb_per_s for s in samples["media direct"]]
        ratio = ratios(up, disk)
        ratio_by[transfer.label] = ratio.median
        gateway_peak = max(s.gateway_rss for s in samples["upload"]) / MB
        media_peak = max(s.media_rss for s in samples["upload"]) / MB
        peaks[transfer.label] = {"gateway": gateway_peak, "media": media_peak}
        names = [name for name, _ in samples["upload"][0].cpu_per_100mb]
        cpu = ", ".join(
            f"{name} {spread([dict(s.cpu_per_100mb)[name] for s in samples['upload']]).median:.2f}"
            for name in names)
        out.notes.append(f"{transfer.label}: CPU seconds per 100 MB through the front door "
                         f"(median): {cpu}")
        out.rows.append((transfer.label, str(spread(disk)), str(spread(up)), str(ratio),
                         str(spread(direct)), str(ratios(up, direct)),
                         f"{gateway_peak:.1f}", f"{media_peak:.1f}"))
    first, last = TRANSFERS[0].label, TRANSFERS[-1].label
    growth = {name: peaks[last][name] - peaks[first][name] for name in ("gateway", "media")}
    out.notes += [
        f"idle RSS before the first upload: gateway {idle['gateway'] / MB:.1f} MiB, "
        f"media {idle['media'] / MB:.1f} MiB; peak RSS is the highest of {rounds} rounds",
        f"RSS growth from the 5 MB to the 500 MB transfer: gateway {growth['gateway']:+.1f} "
        f"MiB, media {growth['media']:+.1f} MiB",
        "500 MB transfer: " + ("POST /api/imports (a stored-entry ZIP; its import ends "
                               "before the next transfer starts)" if imports else
                               "POST /api/media (the import endpoint was not there)"),
        "media direct: the same upload sent straight to media with the internal identity "
        "the gateway would add (a diagnostic, not a target)",
        f"curl streams each file from disk; {rounds} interleaved rounds per size"
        f"{' (quick)' if quick else ''}; MB = 10^6 bytes, MiB = 2^20",
    ]
    out.results += [
        Result("upload_photo_50mb_vs_disk", ratio_by["50 MB photo"], 0.5),
        Result("upload_import_500mb_vs_disk", ratio_by["500 MB import"], 0.5),
        Result("gateway_upload_peak_rss_mb", max(p["gateway"] for p in peaks.values()), 100.0,
               higher=False),
        Result("media_upload_peak_rss_mb", max(p["media"] for p in peaks.values()), 100.0,
               higher=False),
        Result("gateway_rss_growth_5_to_500mb_mb", growth["gateway"], 5.0, higher=False),
        Result("media_rss_growth_5_to_500mb_mb", growth["media"], 5.0, higher=False),
    ]
    return out
