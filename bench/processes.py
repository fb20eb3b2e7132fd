"""Processes the benchmarks start: free ports, supervised children, the stack and nginx."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.machine import pinned
from bench.settings import ADMIN_DATABASE_URL, ROOT

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
