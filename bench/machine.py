"""The machine under the benchmarks: cores and pinning, load, a process tree's memory and CPU."""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections.abc import Mapping, Sequence

import psutil

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
