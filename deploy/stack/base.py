"""What the stack's parts share: its services and ports, the supervisor's timings, free ports,
the database URL a service connects with, and one supervised service's state."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import signal
import socket
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("auth", "media", "gateway")
DEFAULT_PORTS = {"gateway": 8080, "auth": 8081, "media": 8082}
SECRET_SETTINGS = ("JWT__SecretKey", "Internal__SecretKey", "Database__Password",
                   "JWT__PreviousSecretKeys", "Internal__PreviousSecretKeys")

INITIAL_BACKOFF = 0.5
MAX_BACKOFF = 30.0
# A process that stayed up this long is healthy again: its next crash starts the backoff over.
STABLE_AFTER = 30.0
STOP_GRACE = 10.0
LOG_TAIL = 400
# A service that keeps dying while we wait for it (a port in use, a database refusing it)
# is reported at once instead of after the whole timeout.
FAIL_FAST_AFTER = 3

PR_SET_PDEATHSIG = 1


class StackError(Exception):
    pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    # If the runner itself is killed with SIGKILL it cannot stop its children; the kernel can.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def database_url_for(admin_url: str, *, user: str, database: str) -> str:
    """``admin_url`` pointed at ``database`` as ``user``, without a password."""
    parts = urlsplit(admin_url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port:
        host += f":{parts.port}"
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "password"])
    return urlunsplit((parts.scheme, f"{quote(user, safe='')}@{host}", f"/{database}",
                       query, ""))


@dataclass
class Service:
    name: str
    port: int
    env: dict[str, str] = field(default_factory=dict)
    process: asyncio.subprocess.Process | None = None
    want_running: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    supervisor: asyncio.Task[None] | None = None
    pump: asyncio.Task[None] | None = None
    starts: int = 0
    exits: list[int] = field(default_factory=list)
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=LOG_TAIL))
