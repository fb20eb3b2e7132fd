"""schemathesis against /openapi.json on the live stack: auth, media and the gateway as
separate processes, as ``python -m`` runs them. A bounded number of cases: no 5xx, every
response matches the document, and data off the document (negative mode) is a 4xx."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.gateway.gateway_helpers import GOOD_PASSWORD, USERNAME
from tests.support import ROOT

MAX_EXAMPLES = int(os.environ.get("GATEWAY_SCHEMATHESIS_EXAMPLES", "15"))
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
          "response_headers_conformance,response_schema_conformance")
NEGATIVE_CHECKS = "not_a_server_error,negative_data_rejection"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(url)


def post_json(url: str, body: dict[str, str], origin: str) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json",
                                              "Origin": origin})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, dict(response.headers)


@pytest.fixture
def live_stack(base_env: dict[str, str], tmp_path: Path) -> Iterator[tuple[str, str]]:
    ports = {name: free_port() for name in ("auth", "media", "gateway")}
    common = {**base_env, "PATH": os.environ.get("PATH", ""), "Log__Level": "error",
              "Auth__BcryptCost": "10"}
    envs = {
        "auth": {**common, "Server__Port": str(ports["auth"])},
        "media": {**common, "Server__Port": str(ports["media"]),
                  "MediaStorage__RootPath": str(tmp_path / "media-root")},
        "gateway": {**common, "Server__Port": str(ports["gateway"]),
                    "Upstreams__Auth": f"http://127.0.0.1:{ports['auth']}",
                    "Upstreams__Media": f"http://127.0.0.1:{ports['media']}",
                    "RateLimit__GlobalPerMinute": "100000", "RateLimit__GlobalBurst": "10000",
                    "RateLimit__AuthPerMinute": "100000", "RateLimit__AuthBurst": "10000"},
    }
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for name in ("auth", "media", "gateway"):
            process = subprocess.Popen([sys.executable, "-m", f"services.{name}"],
                                       env=envs[name], cwd=ROOT,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            processes.append(process)
            wait_for(f"http://127.0.0.1:{ports[name]}/health", process)
        base = f"http://127.0.0.1:{ports['gateway']}"
        wait_for(f"{base}/ready", processes[-1])
        credentials = {"username": USERNAME, "password": GOOD_PASSWORD}
        assert post_json(f"{base}/api/auth/register", credentials, base)[0] == 201
        status, headers = post_json(f"{base}/api/auth/login", credentials, base)
        assert status == 200
        cookie = headers["Set-Cookie"].split(";", 1)[0]
        yield base, cookie
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()


def run_schemathesis(base: str, cookie: str, cwd: Path, *, mode: str, checks: str,
                     excluded: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("st", path=str(Path(sys.executable).parent))
    assert binary is not None
    exclusions = [argument for operation in excluded
                  for argument in ("--exclude-operation-id", operation)]
    return subprocess.run([
        binary, "run", f"{base}/openapi.json",
        "--mode", mode,
        "--checks", checks,
        "--max-examples", str(MAX_EXAMPLES),
        "--workers", "1",
        "--seed", "20261128",
        "--phases", "examples,coverage,fuzzing",
        "--header", f"Cookie: {cookie}",
        "--header", f"Origin: {base}",
        *exclusions,
        "--request-timeout", "30",
        "--no-color",
        "--generation-database", "none",
        # The session cookie is the run's own header: leaving it out is no negative case.
        "--generation-with-security-parameters", "false",
    ], cwd=cwd, capture_output=True, text=True, timeout=900, check=False)


def assert_every_case_passed(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]
    generated = re.search(r"(\d+) generated, (\d+) passed", result.stdout)
    assert generated is not None, result.stdout[-3000:]
    assert int(generated.group(1)) > 0
    assert generated.group(1) == generated.group(2)


def assert_session_still_open(base: str, cookie: str) -> None:
    """The run's cases were answered as the signed-in user, not as a stranger, to the end."""
    me = urllib.request.Request(f"{base}/api/auth/me", headers={"Cookie": cookie})
    with urllib.request.urlopen(me, timeout=30) as response:
        assert response.status == 200


def test_schemathesis_finds_no_5xx_and_no_response_off_the_document(
        live_stack: tuple[str, str], tmp_path: Path) -> None:
    base, cookie = live_stack
    # Logging out, changing the password or revoking a session (schemathesis reuses the
    # ids that GET /api/auth/sessions lists) would end the run's own session.
    result = run_schemathesis(base, cookie, tmp_path, mode="all", checks=CHECKS,
                              excluded=("logout", "changePassword", "deleteSession"))
    assert_every_case_passed(result)
    assert_session_still_open(base, cookie)


def test_schemathesis_negative_data_is_refused_with_4xx_never_5xx(
        live_stack: tuple[str, str], tmp_path: Path) -> None:
    base, cookie = live_stack
    # Data off the document never holds a valid body or session id, so the password change
    # and the session revocation are in; logging out needs no data and would end the run.
    result = run_schemathesis(base, cookie, tmp_path, mode="negative",
                              checks=NEGATIVE_CHECKS, excluded=("logout",))
    assert_every_case_passed(result)
    assert_session_still_open(base, cookie)
