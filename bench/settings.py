"""Where the benchmarks run: the tree, the interpreter, the database and Redis they use."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from shared.cookies import auth_cookie_name

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
# The benchmarks run the services with production settings: Secure, prefixed cookie.
AUTH_COOKIE = auth_cookie_name(secure=True)
ADMIN_DATABASE_URL = os.environ.get(
    "BENCH_DATABASE_URL",
    os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
