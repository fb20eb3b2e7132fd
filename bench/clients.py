"""The client side: load generation with wrk, plain HTTP calls, sign-in and curl uploads."""

from __future__ import annotations

import dataclasses
import re
import secrets
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.machine import pinned, tree_cpu_seconds
from bench.settings import AUTH_COOKIE

# ---------------------------------------------------------------- load generation


@dataclass(frozen=True, slots=True)
class Load:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int = 0
    # CPU seconds the measured processes spent during the run, when asked for.
    cpu_seconds: float = 0.0

    @property
    def cpu_us_per_request(self) -> float:
        return self.cpu_seconds / self.requests * 1e6 if self.requests else float("nan")

    def __str__(self) -> str:
        text = (f"{self.requests_per_second:.0f} req/s, p50 {self.p50_ms:.2f} ms, "
                f"p99 {self.p99_ms:.2f} ms, errors {self.errors}")
        if self.cpu_seconds:
            text += f", {self.cpu_us_per_request:.0f} µs CPU/request"
        return text


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if match is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str) -> Load:
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.MULTILINE)
    if rate is None or p50 is None or p99 is None:
        raise RuntimeError(f"cannot read wrk's output:\n{output}")
    count = re.search(r"(\d+) requests in", output)
    errors = 0
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    if non_2xx:
        errors += int(non_2xx.group(1))
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    return Load(float(rate.group(1)), _ms(p50.group(1)), _ms(p99.group(1)), errors,
                int(count.group(1)) if count else 0)


def wrk(url: str, *, seconds: float, connections: int, threads: int = 1,
        headers: Mapping[str, str] | None = None, cpus: Sequence[int] | None = None,
        cpu_of: Sequence[int] = ()) -> Load:
    """A wrk run; with ``cpu_of``, also the CPU time those process trees spent in it.

    CPU per request barely moves when other work shares the machine, unlike requests per
    second, so it is the steadier measure of what each path costs.
    """
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (make system-deps installs it)")
    command = ["wrk", "--latency", "-t", str(threads), "-c", str(connections),
               "-d", f"{max(1, round(seconds))}s", "--timeout", "5s"]
    for name, value in (headers or {}).items():
        command += ["-H", f"{name}: {value}"]
    command.append(url)
    before = sum(tree_cpu_seconds(pid) for pid in cpu_of)
    completed = subprocess.run(pinned(command, cpus), capture_output=True, text=True,
                               timeout=seconds + 30, check=False)
    spent = sum(tree_cpu_seconds(pid) for pid in cpu_of) - before
    if completed.returncode != 0:
        raise RuntimeError(f"wrk failed: {completed.stderr or completed.stdout}")
    load = parse_wrk(completed.stdout)
    return dataclasses.replace(load, cpu_seconds=spent) if cpu_of else load




# ---------------------------------------------------------------- HTTP clients


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        import json

        return json.loads(self.body)


def http(method: str, url: str, *, json_body: Any = None,
         headers: Mapping[str, str] | None = None, timeout: float = 30.0) -> Answer:
    import json

    data = None if json_body is None else json.dumps(json_body).encode()
    all_headers = dict(headers or {})
    if data is not None:
        all_headers.setdefault("Content-Type", "application/json")
    request = urllib.request.Request(url, data=data, method=method, headers=all_headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Answer(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as error:
        return Answer(error.code, dict(error.headers), error.read())


def auth_cookie(answer: Answer) -> str:
    from http.cookies import SimpleCookie

    for name, value in answer.headers.items():
        if name.lower() == "set-cookie":
            cookie = SimpleCookie(value)
            if AUTH_COOKIE in cookie:
                return cookie[AUTH_COOKIE].value
    raise RuntimeError(f"no {AUTH_COOKIE} cookie in the answer ({answer.status}): "
                       f"{answer.body!r}")


def register_and_login(base_url: str, *, username: str = "bench-runner",
                       password: str | None = None, prefix: str = "/api/auth") -> str:
    """Register the instance's one user and log in; the sign-in cookie's value."""
    password = password or secrets.token_urlsafe(18)
    body = {"username": username, "password": password}
    registered = http("POST", f"{base_url}{prefix}/register", json_body=body)
    if registered.status not in (200, 201):
        raise RuntimeError(f"register answered {registered.status}: {registered.body!r}")
    return auth_cookie(http("POST", f"{base_url}{prefix}/login", json_body=body))


@dataclass(frozen=True, slots=True)
class Upload:
    status: int
    seconds: float
    body: bytes


def curl_upload(url: str, path: Path, *, filename: str, content_type: str,
                headers: Mapping[str, str], timeout: float = 600.0) -> Upload:
    """One multipart upload streamed from disk by curl; its status, wall time and body."""
    body_file = path.with_name(path.name + ".answer")
    command = ["curl", "-sS", "-o", str(body_file), "-w", "%{http_code} %{time_total}",
               "-H", "Expect:", "--max-time", str(int(timeout)),
               "-F", f"file=@{path};filename={filename};type={content_type}"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    command.append(url)
    completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout + 30,
                               check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"curl failed ({completed.returncode}): {completed.stderr}")
    status, seconds = completed.stdout.split()
    body = body_file.read_bytes() if body_file.exists() else b""
    body_file.unlink(missing_ok=True)
    return Upload(int(status), float(seconds), body)
