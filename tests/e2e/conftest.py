"""The whole stack as separate processes, for end-to-end tests.

Fixtures (all session-scoped, started only when a test asks for them):

- ``stack``: auth, media and gateway started by ``deploy.stack`` on free ports, in a
  temporary folder, against a fresh database on the test PostgreSQL with its own
  randomly named roles (dropped at the end). Production mode; fast bcrypt; rate limits
  high enough for tests. ``stack.url`` is the gateway (plain HTTP on 127.0.0.1). It is a
  ``deploy.stack.BackgroundStack``: ``kill(name, restart=...)``, ``start_service``,
  ``wait_healthy``, ``logs``, ``env`` are plain calls, usable from sync and async tests.
- ``make_stack(**overrides)``: another stack with extra settings (``env=``,
  ``service_env=``), stopped at the end of the session.
- ``tls``: a trustme CA and a certificate for ``localhost``/``127.0.0.1``.
- ``edge``: a stack with the Redis rate-limit backend (its own redis-server on a free
  port) and Debian's nginx in front running ``deploy/nginx/nginx.conf``, with TLS.
  ``edge.https_url``, ``edge.http_url``, ``edge.ca_file``, ``edge.stack``, ``edge.redis``.
"""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from deploy.nginx_local import LocalNginx, NginxProcess, find_nginx
from deploy.stack import BackgroundStack, Stack, free_port
from tests.support import CI

# Tests log in and upload far more often than a person; the gateway's own limits are
# tested where they are the subject.
TEST_ENV = {
    "Log__Level": "warning",
    "Auth__BcryptCost": "10",
    "RateLimit__GlobalPerMinute": "600000",
    "RateLimit__GlobalBurst": "100000",
    "RateLimit__AuthPerMinute": "60000",
    "RateLimit__AuthBurst": "10000",
}


def require_tool(name: str, found: str | None) -> str:
    """The tool's path; under CI a missing tool fails the test instead of skipping it."""
    if found:
        return found
    message = f"{name} is not installed (scripts/system-packages.txt; make system-deps)"
    if CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)
    raise AssertionError  # unreachable: skip raises


def _new_stack(root: Path, admin_url: str, **kwargs) -> BackgroundStack:
    env = dict(TEST_ENV)
    env.update(kwargs.pop("env", {}))
    stack = Stack(root, admin_url=admin_url, database=f"tempo_e2e_{secrets.token_hex(5)}",
                  role_prefix=f"tempo_e2e_{secrets.token_hex(4)}",
                  ports={name: free_port() for name in ("auth", "media", "gateway")},
                  env=env, drop_database_on_exit=True, **kwargs)
    return BackgroundStack(stack)


@pytest.fixture(scope="session")
def make_stack(postgres_admin_url: str, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[Callable[..., BackgroundStack]]:
    started: list[BackgroundStack] = []

    def make(**kwargs) -> BackgroundStack:
        stack = _new_stack(tmp_path_factory.mktemp("stack"), postgres_admin_url, **kwargs)
        stack.__enter__()
        started.append(stack)
        return stack

    try:
        yield make
    finally:
        for stack in reversed(started):
            stack.close()


@pytest.fixture(scope="session")
def stack(make_stack: Callable[..., BackgroundStack]) -> BackgroundStack:
    return make_stack()


@dataclass
class TlsFiles:
    ca: trustme.CA
    ca_file: Path
    cert_file: Path
    key_file: Path


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    folder = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    cert.private_key_pem.write_to_path(str(folder / "privkey.pem"))
    with (folder / "fullchain.pem").open("wb") as chain:
        for pem in cert.cert_chain_pems:
            chain.write(pem.bytes())
    return TlsFiles(ca, folder / "ca.pem", folder / "fullchain.pem", folder / "privkey.pem")


class RedisServer:
    """A redis-server of the tests' own on a free port (never the machine's 6379)."""

    def __init__(self, folder: Path) -> None:
        self.binary = require_tool("redis-server", shutil.which("redis-server"))
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None


@dataclass
class Edge:
    stack: BackgroundStack
    nginx: NginxProcess
    redis: RedisServer
    tls: TlsFiles
    https_port: int
    http_port: int
    media_limit_bytes: int

    @property
    def https_url(self) -> str:
        return f"https://localhost:{self.https_port}"

    @property
    def http_url(self) -> str:
        return f"http://localhost:{self.http_port}"

    @property
    def origin(self) -> str:
        return self.https_url

    @property
    def ca_file(self) -> Path:
        return self.tls.ca_file


# Big enough for the 100 MB upload the tests send through nginx -> gateway -> media.
EDGE_MEDIA_LIMIT = 110_000_000
MULTIPART_OVERHEAD = 1_048_576


@pytest.fixture(scope="session")
def edge(make_stack: Callable[..., BackgroundStack], tls: TlsFiles,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    nginx_binary = require_tool("nginx", find_nginx())
    redis = RedisServer(tmp_path_factory.mktemp("redis"))
    redis.start()
    https_port, http_port = free_port(), free_port()
    origin = f"https://localhost:{https_port}"
    try:
        stack = make_stack(env={
            "RateLimit__Backend": "redis",
            "Redis__Url": redis.url,
            "Proxy__TrustedNetworks": "127.0.0.1/32",
            "CORS__AllowedOrigins": origin,
            "MediaStorage__MaxFileSizeBytes": str(EDGE_MEDIA_LIMIT),
        })
        nginx = NginxProcess(LocalNginx(
            tmp_path_factory.mktemp("nginx"), stack.service_url("gateway").split("//")[1],
            tls.cert_file, tls.key_file, http_port, https_port,
            media_limit_bytes=EDGE_MEDIA_LIMIT + MULTIPART_OVERHEAD), nginx=nginx_binary)
        nginx.start()
        try:
            yield Edge(stack, nginx, redis, tls, https_port, http_port, EDGE_MEDIA_LIMIT)
        finally:
            nginx.stop()
    finally:
        redis.stop()
