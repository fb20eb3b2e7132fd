"""What every benchmark shares: processes, ports, pinning, repetitions, ratios, RSS, results.

Machines here are shared and noisy, so a figure on its own means little. Every benchmark
measures its subject and a reference in the same run, interleaved (A B B A ...), and reports
the median of the per-round ratios with their minimum and maximum.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from shared.cookies import auth_cookie_name

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
# The benchmarks run the services with production settings: Secure, prefixed cookie.
AUTH_COOKIE = auth_cookie_name(secure=True)
ADMIN_DATABASE_URL = os.environ.get(
    "BENCH_DATABASE_URL",
    os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


# ---------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class Result:
    """One target: ``higher`` says whether a larger measurement is the better one."""

    name: str
    measured: float
    target: float
    higher: bool = True
    unit: str = ""
    note: str = ""

    @property
    def passed(self) -> bool:
        return self.measured >= self.target if self.higher else self.measured < self.target

    def line(self) -> str:
        verdict = "pass" if self.passed else "fail"
        return (f"RESULT {self.name} measured={_num(self.measured)} "
                f"target={_num(self.target)} {verdict}")


def _num(value: float) -> str:
    if value != value:  # NaN: the measurement could not be taken
        return "nan"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3f}"


@dataclass
class Report:
    """What one benchmark prints: a table of figures, then one RESULT line per target."""

    title: str
    rows: list[tuple[str, ...]] = field(default_factory=list)
    header: tuple[str, ...] = ()
    results: list[Result] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def table(self) -> str:
        if not self.header:
            return ""
        lines = ["| " + " | ".join(self.header) + " |",
                 "|" + "|".join("---" for _ in self.header) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines)

    def render(self) -> str:
        parts = [f"## {self.title}", ""]
        if self.header:
            parts += [self.table(), ""]
        parts += [f"- {note}" for note in self.notes]
        if self.notes:
            parts.append("")
        parts += ["```", *(result.line() for result in self.results), "```"]
        return "\n".join(parts)


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- statistics


@dataclass(frozen=True, slots=True)
class Spread:
    median: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{_num(self.median)} ({_num(self.low)}–{_num(self.high)})"


def spread(values: Sequence[float]) -> Spread:
    clean = [v for v in values if v == v]
    if not clean:
        return Spread(float("nan"), float("nan"), float("nan"))
    return Spread(statistics.median(clean), min(clean), max(clean))


def ratios(numerators: Sequence[float], denominators: Sequence[float]) -> Spread:
    """The per-round ratios of two interleaved series (round i against round i)."""
    return spread([a / b if b else float("nan") for a, b in zip(numerators, denominators,
                                                                  strict=True)])


def percentile(values: Sequence[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def interleave(variants: Mapping[str, Callable[[], Any]], rounds: int) -> dict[str, list[Any]]:
    """Run every variant once per round, the order reversed every other round: A B C C B A
    A B C ...

    Alternating spreads the machine's slow moments over all variants instead of letting
    one of them take a whole noisy stretch; reversing keeps any one variant from always
    running first (or second, after a warm-up by the other) in every round.
    """
    measured: dict[str, list[Any]] = {name: [] for name in variants}
    forward = list(variants.items())
    for round_number in range(1, rounds + 1):
        order = forward if round_number % 2 else forward[::-1]
        for name, run in order:
            value = run()
            say(f"  round {round_number}/{rounds} {name}: {value}")
            measured[name].append(value)
    return measured


# ---------------------------------------------------------------- cores


def cores() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def core_split() -> tuple[list[int], list[int]]:
    """(cores for the thing under test, cores for the load generator and backends).

    With two cores, the edge under test (nginx, the gateway, nginx with its verifier) gets
    one to itself and the load generator shares the other with the upstream. Every variant
    gets the same split, so none is helped by stealing the other's core.
    """
    available = cores()
    if len(available) < 2:
        return available, available
    half = len(available) // 2
    return available[:half], available[half:]


def pinned(command: Sequence[str], cpus: Sequence[int] | None) -> list[str]:
    if not cpus or shutil.which("taskset") is None:
        return list(command)
    return ["taskset", "-c", ",".join(str(c) for c in cpus), *command]


def pin_tree(pid: int, cpus: Sequence[int]) -> None:
    """Bind every thread of a running process and its children to ``cpus``.

    ``sched_setaffinity`` on a pid moves only that one thread; threads already started
    (executors, pools) keep their mask unless each is moved by its own id.
    """
    try:
        root = psutil.Process(pid)
        members = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for member in members:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            for task in os.listdir(f"/proc/{member.pid}/task"):
                with contextlib.suppress(ProcessLookupError):
                    os.sched_setaffinity(int(task), cpus)


def load_average() -> float:
    return os.getloadavg()[0]


# ---------------------------------------------------------------- ports and processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Process:
    """A child process in its own session, so that stopping it stops all it started."""

    def __init__(self, name: str, command: Sequence[str], *, env: Mapping[str, str] | None = None,
                 cwd: Path | None = None, cpus: Sequence[int] | None = None,
                 log_dir: Path | None = None) -> None:
        self.name = name
        self.log_path = (log_dir or Path(tempfile.gettempdir())) / f"{name}.log"
        self._log = self.log_path.open("wb")
        full_env = {**os.environ, **(env or {})}
        self.popen = subprocess.Popen(
            pinned(command, cpus), env=full_env, cwd=cwd or ROOT, stdin=subprocess.DEVNULL,
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.popen.wait(timeout)
        # Workers the leader started may outlive it; they share its process group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        self._log.close()


class Processes(contextlib.ExitStack):
    """Starts processes and stops every one of them on the way out, whatever happens."""

    def __init__(self, log_dir: Path) -> None:
        super().__init__()
        self.log_dir = log_dir

    def start(self, name: str, command: Sequence[str], **kwargs: Any) -> Process:
        process = Process(name, command, log_dir=self.log_dir, **kwargs)
        self.callback(process.stop)
        return process


def wait_http(url: str, *, process: Process | None = None, timeout: float = 60.0,
              headers: Mapping[str, str] | None = None) -> None:
    """Wait until ``url`` answers 2xx; fail with the process's log if it died first."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if process is not None and not process.alive():
            raise RuntimeError(f"{process.name} exited early:\n{process.log_tail()}")
        try:
            request = urllib.request.Request(url, headers=dict(headers or {}))
            with urllib.request.urlopen(request, timeout=2) as response:
                if 200 <= response.status < 300:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.1)
    tail = process.log_tail() if process is not None else ""
    raise RuntimeError(f"{url} did not answer within {timeout:.0f}s ({last})\n{tail}")


@contextlib.contextmanager
def work_dir(prefix: str) -> Iterator[Path]:
    """A temporary folder on the same filesystem as the repository's var/ (never the tmpfs)."""
    base = ROOT / "var" / "bench"
    base.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------- memory


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants (0 once it is gone)."""
    try:
        root = psutil.Process(pid)
        members = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for member in members:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += member.memory_info().rss
    return total


def tree_cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of a process and its descendants so far."""
    try:
        root = psutil.Process(pid)
        members = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for member in members:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            times = member.cpu_times()
            total += times.user + times.system
    return total


class PeakRss:
    """Samples the RSS of process trees in a thread; ``peaks`` in bytes by name."""

    def __init__(self, pids: Mapping[str, int], interval: float = 0.02) -> None:
        self.pids = dict(pids)
        self.interval = interval
        self.peaks = dict.fromkeys(self.pids, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, pid in self.pids.items():
                self.peaks[name] = max(self.peaks[name], tree_rss(pid))
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        for name, pid in self.pids.items():
            self.peaks[name] = max(self.peaks[name], tree_rss(pid))


MB = 1024 * 1024


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


# ---------------------------------------------------------------- database and secrets


def strong_secret() -> str:
    return secrets.token_urlsafe(48)


def stack(folder: Path, *, env: Mapping[str, str] | None = None,
          service_env: Mapping[str, Mapping[str, str]] | None = None) -> Any:
    """The project's stack runner on free ports, with its own database and roles, both
    dropped when it stops."""
    from deploy.stack import SERVICES, Stack

    # Roles and database named for this run alone, so runs never meet on one server.
    prefix = f"tempo_{secrets.token_hex(4)}"
    return Stack(folder, admin_url=ADMIN_DATABASE_URL, database=f"{prefix}_bench",
                 role_prefix=prefix, drop_database_on_exit=True,
                 ports={name: free_port() for name in SERVICES},
                 env={"Log__Level": "warning", **(env or {})}, service_env=service_env,
                 startup_timeout=90.0)


# ---------------------------------------------------------------- nginx


def nginx_binary() -> str:
    for candidate in (shutil.which("nginx"), "/usr/sbin/nginx"):
        if candidate and Path(candidate).exists():
            return candidate
    raise RuntimeError("nginx is not installed (make system-deps installs it)")


def start_nginx(processes: Processes, name: str, folder: Path, http_block: str, *,
                workers: int = 1, cpus: Sequence[int] | None = None) -> Process:
    """Our own nginx, in the foreground, with every path inside ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for sub in ("logs", "client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (folder / sub).mkdir(exist_ok=True)
    config = folder / "nginx.conf"
    config.write_text(f"""
daemon off;
master_process on;
worker_processes {workers};
pid {folder}/nginx.pid;
error_log {folder}/logs/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    server_tokens off;
    client_body_temp_path {folder}/client_body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
{http_block}
}}
""")
    return processes.start(name, [nginx_binary(), "-p", str(folder), "-c", str(config)],
                           cpus=cpus)


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
