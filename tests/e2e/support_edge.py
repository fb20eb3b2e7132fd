"""What the end-to-end tests through nginx share: TLS clients, accounts, files, fsck."""

from __future__ import annotations

import hashlib
import os
import secrets
import ssl
import subprocess
import sys
from pathlib import Path

import aiohttp

from deploy.stack import ROOT

PASSWORD = "correct-horse-battery-staple-42"
SECURITY_HEADERS = (
    "X-Frame-Options",
    "X-Content-Type-Options",
    "X-XSS-Protection",
    "Referrer-Policy",
    "Content-Security-Policy",
    "Strict-Transport-Security",
    "Cross-Origin-Opener-Policy",
    "Cross-Origin-Resource-Policy",
    "Permissions-Policy",
)


def client_context(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))


def session(edge, **kwargs) -> aiohttp.ClientSession:
    """A browser-like client: trusts the test CA, keeps cookies, sends the page's Origin."""
    connector = aiohttp.TCPConnector(ssl=client_context(edge.ca_file))
    return aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.CookieJar(),
        headers={"Origin": edge.origin}, timeout=aiohttp.ClientTimeout(total=300), **kwargs)


async def sign_in(client: aiohttp.ClientSession, edge) -> str:
    """Register the single user once per stack, then log in; returns the username."""
    username = "runner"
    async with client.get(f"{edge.https_url}/api/auth/registration-available") as response:
        available = (await response.json())["registrationAvailable"]
    if available:
        async with client.post(f"{edge.https_url}/api/auth/register",
                               json={"username": username, "password": PASSWORD}) as response:
            assert response.status in (201, 403), await response.text()
    async with client.post(f"{edge.https_url}/api/auth/login",
                           json={"username": username, "password": PASSWORD}) as response:
        assert response.status == 200, await response.text()
    return username


def mp4_file(path: Path, size: int) -> str:
    """A file that sniffs as MP4 (an ftyp box, then one mdat box of random bytes);
    returns its SHA-256."""
    ftyp = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"
    digest = hashlib.sha256()
    with path.open("wb") as handle:
        body = size - len(ftyp) - 8
        header = ftyp + body.to_bytes(4, "big") + b"mdat" if body + 8 < 2**32 else None
        assert header is not None
        handle.write(header)
        digest.update(header)
        block = os.urandom(1024 * 1024)
        left = body
        while left > 0:
            piece = block[: min(left, len(block))]
            handle.write(piece)
            digest.update(piece)
            left -= len(piece)
    return digest.hexdigest()


def png_bytes() -> bytes:
    from io import BytesIO

    from PIL import Image

    buffer = BytesIO()
    Image.new("RGB", (32, 16), (200, 40, secrets.randbelow(255))).save(buffer, "PNG")
    return buffer.getvalue()


def media_tree(stack) -> dict[str, int]:
    """Every file under the stack's media root with its size."""
    root = stack.stack.media_root
    return {str(path.relative_to(root)): path.stat().st_size
            for path in root.rglob("*") if path.is_file()}


def fsck(stack) -> subprocess.CompletedProcess[str]:
    """``python -m services.media fsck`` with the media service's own settings."""
    return subprocess.run([sys.executable, "-m", "services.media", "fsck"], cwd=ROOT,
                          env=stack.env("media"), capture_output=True, text=True, timeout=120,
                          check=False)


def assert_fsck_clean(stack) -> None:
    result = fsck(stack)
    assert result.returncode == 0, f"fsck found problems:\n{result.stdout}\n{result.stderr}"
