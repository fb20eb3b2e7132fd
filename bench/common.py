"""What every benchmark shares: processes, ports, pinning, repetitions, ratios, RSS, results.

Machines here are shared and noisy, so a figure on its own means little. Every benchmark
measures its subject and a reference in the same run, interleaved (A B B A ...), and reports
the median of the per-round ratios with their minimum and maximum.

The parts live in their own modules (``settings``, ``results``, ``machine``, ``processes``,
``clients``); this one gathers them under the one name the benchmarks import from.
"""

from bench.clients import (
    Answer,
    Load,
    Upload,
    auth_cookie,
    curl_upload,
    http,
    parse_wrk,
    register_and_login,
    wrk,
)
from bench.machine import (
    MB,
    PeakRss,
    core_split,
    cores,
    load_average,
    pin_tree,
    pinned,
    tree_cpu_seconds,
    tree_rss,
)
from bench.processes import (
    Process,
    Processes,
    free_port,
    nginx_binary,
    stack,
    start_nginx,
    strong_secret,
    wait_http,
    work_dir,
)
from bench.results import Report, Result, Spread, interleave, percentile, ratios, say, spread
from bench.settings import ADMIN_DATABASE_URL, AUTH_COOKIE, PYTHON, REDIS_URL, ROOT

__all__ = [
    "ADMIN_DATABASE_URL", "AUTH_COOKIE", "MB", "PYTHON", "REDIS_URL", "ROOT", "Answer", "Load",
    "PeakRss", "Process", "Processes", "Report", "Result", "Spread", "Upload", "auth_cookie",
    "core_split", "cores", "curl_upload", "free_port", "http", "interleave", "load_average",
    "nginx_binary", "parse_wrk", "percentile", "pin_tree", "pinned", "ratios",
    "register_and_login", "say", "spread", "stack", "start_nginx", "strong_secret",
    "tree_cpu_seconds", "tree_rss", "wait_http", "work_dir", "wrk",
]
