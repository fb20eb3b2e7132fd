"""``python -m deploy.stack`` (what ``make run`` runs) as a user runs it: embedded PostgreSQL,
secrets on first run, a browser login over plain HTTP, a crashed service restarted, and
SIGTERM leaving no process behind."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from http.cookies import SimpleCookie
from pathlib import Path

import aiohttp
import asyncpg
import psutil
import pytest

from deploy.rotate import secret_files
from deploy.stack import ROOT, Stack, StackError, free_port
from shared.config import SERVICE_SECRETS, SETUP_CODE
from tests.e2e.support_edge import PASSWORD
from tests.support import DEV_AUTH_COOKIE

pytestmark = pytest.mark.timeout(240)


def free_port_run(count: int = 3) -> int:
    """A port with the next ``count - 1`` free too (the runner uses three in a row)."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + count > 65535:
            continue
        try:
            for offset in range(count):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", base + offset))
        except OSError:
            continue
        return base
    raise RuntimeError("no run of free ports")


class Runner:
    def __init__(self, var, port: int) -> None:
        env = {key: value for key, value in os.environ.items() if "__" not in key}
        env["Auth__BcryptCost"] = "10"
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "deploy.stack", "--var", str(var), "--port", str(port)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        try:
            for line in self.process.stdout:
                self.lines.append(line.rstrip("\n"))
        except ValueError:  # closed by the test once the runner has exited
            pass

    def wait_for(self, text: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} in the output:\n" + "\n".join(self.lines))
            time.sleep(0.1)

    def output(self) -> str:
        return "\n".join(self.lines)


def processes_of(var) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline", "environ"]):
        try:
            cmdline = " ".join(process.info["cmdline"] or [])
            environ = process.info["environ"] or {}
        except (psutil.Error, TypeError):
            continue
        if str(var) in cmdline or any(str(var) in value for value in environ.values()):
            found.append(process)
    return found


def secret_variables(running: list[psutil.Process], service: str) -> dict[str, str]:
    """The secret settings in the environment of the service's process."""
    secret_settings = {setting for held in SERVICE_SECRETS.values() for setting in held}
    process = next(p for p in running if f"services.{service}" in " ".join(p.cmdline()))
    return {key: value for key, value in process.environ().items()
            if key.removesuffix("_FILE") in secret_settings}


@pytest.fixture
def var():
    # Outside pytest's temporary root, which a concurrent pytest run resets to 0700: the
    # embedded PostgreSQL runs as an unprivileged user that must reach its data directory.
    folder = Path(tempfile.mkdtemp(prefix="tempo-run-"))
    try:
        yield folder / "var"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def test_make_run_serves_a_browser_login_restarts_a_crash_and_stops_cleanly(var):
    port = free_port_run()
    runner = Runner(var, port)
    try:
        runner.wait_for("Tempo is running at")
        url = f"http://127.0.0.1:{port}"
        assert f"{url}/" in runner.output()

        for name in ("jwt_key", "internal_key", "db_auth_password", "db_media_password",
                     "db_gateway_password"):
            path = var / "secrets" / name
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
            assert len(path.read_text()) >= 32
        assert stat.S_IMODE((var / "secrets").stat().st_mode) == 0o700

        # What a browser does at the printed URL, over plain HTTP in development mode.
        # (aiohttp keeps cookies of IP-address hosts only when told to; browsers always do)
        async with aiohttp.ClientSession(headers={"Origin": url},
                                         cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
            async with browser.post(f"{url}/api/auth/register",
                                    json={"username": "me", "password": PASSWORD}) as response:
                assert response.status == 201, await response.text()
            async with browser.post(f"{url}/api/auth/login",
                                    json={"username": "me", "password": PASSWORD}) as response:
                assert response.status == 200
                cookie = SimpleCookie(response.headers["Set-Cookie"])[DEV_AUTH_COOKIE]
                assert cookie["httponly"] is True
                assert not cookie["secure"]  # a browser would drop a Secure cookie on http
            async with browser.get(f"{url}/api/auth/me") as response:
                assert response.status == 200

            # A service that dies is reported and comes back by itself.
            media = next(p for p in psutil.Process(runner.process.pid).children(recursive=True)
                         if "services.media" in " ".join(p.cmdline()))
            media.kill()
            runner.wait_for("media exited with status -9; restarting", timeout=30)
            deadline = time.monotonic() + 60
            while True:
                async with browser.get(f"{url}/api/media") as response:
                    if response.status == 200:
                        break
                assert time.monotonic() < deadline, runner.output()
                time.sleep(0.2)

        running = processes_of(var)
        assert any("postgres" in " ".join(p.cmdline()) for p in running)
        assert len([p for p in running if "services." in " ".join(p.cmdline())]) >= 3
        for service in ("auth", "media", "gateway"):
            # Development mode asks for no setup code.
            assert secret_variables(running, service) == {
                f"{setting}_FILE": str(var / "secrets" / name)
                for setting, name in secret_files(service).items()
                if setting != SETUP_CODE}, service
    finally:
        runner.process.send_signal(signal.SIGTERM)
        try:
            code = runner.process.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(runner.process.pid, signal.SIGKILL)
            raise
    runner.process.stdout.close()
    assert code == 0, runner.output()
    deadline = time.monotonic() + 15
    while (left := [p for p in processes_of(var) if p.is_running()
                    and p.status() != psutil.STATUS_ZOMBIE]):
        assert time.monotonic() < deadline, f"left behind: {[p.cmdline() for p in left]}"
        time.sleep(0.2)


async def test_a_service_refusing_its_settings_stops_the_start_and_cleans_up(
        tmp_path, postgres_admin_url):
    prefix = f"tempo_e2e_{secrets.token_hex(4)}"
    database = f"tempo_e2e_{secrets.token_hex(5)}"
    stack = Stack(tmp_path, admin_url=postgres_admin_url, database=database, role_prefix=prefix,
                  ports={name: free_port() for name in ("auth", "media", "gateway")},
                  env={"Auth__BcryptCost": "3"}, drop_database_on_exit=True)
    with pytest.raises(StackError, match="auth refused its settings") as refused:
        async with stack:
            pass
    assert "Auth__BcryptCost: must be at least 10" in str(refused.value)
    assert all(stack.pid(name) is None for name in ("auth", "media", "gateway"))
    admin = await asyncpg.connect(postgres_admin_url)
    try:
        assert not await admin.fetchval("SELECT count(*) FROM pg_roles WHERE rolname LIKE $1",
                                        f"{prefix}%")
        assert not await admin.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1",
                                        database)
    finally:
        await admin.close()


async def test_a_service_that_keeps_dying_at_start_is_reported_without_waiting(
        tmp_path, postgres_admin_url):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        stack = Stack(tmp_path, admin_url=postgres_admin_url,
                      database=f"tempo_e2e_{secrets.token_hex(5)}",
                      role_prefix=f"tempo_e2e_{secrets.token_hex(4)}",
                      ports={"auth": port, "media": free_port(), "gateway": free_port()},
                      drop_database_on_exit=True, startup_timeout=120)
        started = time.monotonic()
        with pytest.raises(StackError, match="auth exited 3 times while starting"):
            async with stack:
                pass
        assert time.monotonic() - started < 60


def test_ctrl_c_stops_everything_and_leaves_no_process(var):
    runner = Runner(var, free_port_run())
    try:
        runner.wait_for("Tempo is running at")
        assert len(processes_of(var)) >= 4
    finally:
        # What a terminal does on Ctrl-C: SIGINT to the whole foreground process group.
        os.killpg(runner.process.pid, signal.SIGINT)
        try:
            code = runner.process.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(runner.process.pid, signal.SIGKILL)
            raise
    runner.process.stdout.close()
    assert code == 0, runner.output()
    deadline = time.monotonic() + 15
    while (left := [p for p in processes_of(var) if p.is_running()
                    and p.status() != psutil.STATUS_ZOMBIE]):
        assert time.monotonic() < deadline, f"left behind: {[p.cmdline() for p in left]}"
        time.sleep(0.2)
