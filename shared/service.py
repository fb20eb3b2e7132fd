"""Running a service: load settings, print every problem and exit, or serve."""

from __future__ import annotations

import asyncio
import ssl
import sys
from collections.abc import Callable, Mapping
from typing import TypeVar

from aiohttp import web

from shared.config import SettingsError
from shared.log import configure_logging
from shared.runner import serve_until_signalled

S = TypeVar("S")

EXIT_BAD_SETTINGS = 2


def load_or_exit(load: Callable[[Mapping[str, str] | None], S], service: str) -> S:
    try:
        return load(None)
    except SettingsError as exc:
        for problem in exc.problems:
            print(f"{service}: configuration error: {problem}", file=sys.stderr)
        sys.exit(EXIT_BAD_SETTINGS)


def use_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is optional where it does not build
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def run(app: web.Application, *, service: str, host: str, port: int, log_level: str,
        ssl_context: ssl.SSLContext | None = None) -> None:
    configure_logging(service, log_level)
    use_uvloop()
    asyncio.run(serve_until_signalled(app, host=host, port=port, ssl_context=ssl_context))
