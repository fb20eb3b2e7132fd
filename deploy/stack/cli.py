"""``python -m deploy.stack``: the stack in the foreground until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path

from deploy.stack.base import DEFAULT_PORTS, ROOT
from deploy.stack.runner import Stack


def _settings_from_environment() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if "__" in key}


def setup_code_env(root: Path, *, production: bool, overrides: Mapping[str, str]
                   ) -> tuple[dict[str, dict[str, str]], Path | None]:
    """In production mode the first registration needs the setup code, a secret generated
    with the others (``setup_code``); development mode, and a code given in the shell,
    leave it alone. Returns auth's extra settings and the file to print the code from."""
    if not production or {"Auth__SetupCode", "Auth__SetupCode_FILE"} & set(overrides):
        return {}, None
    path = (root / "secrets" / "setup_code").resolve()
    return {"auth": {"Auth__SetupCode_FILE": str(path)}}, path


async def _serve(args: argparse.Namespace, root: Path) -> int:
    overrides = _settings_from_environment()
    database_url = overrides.pop("Database__Url", None)
    overrides.setdefault("Log__Level", "info")

    def echo(line: str) -> None:
        print(line, flush=True)

    service_env, setup_code = setup_code_env(root, production=args.production,
                                             overrides=overrides)
    stack = Stack(root, env=overrides, database_url=database_url,
                  development=not args.production, host=args.host, echo=echo,
                  service_env=service_env,
                  ports={"gateway": args.port, "auth": args.port + 1,
                         "media": args.port + 2})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    starting = asyncio.create_task(stack.start())
    stopped = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if starting.done() and starting.exception() is None:
            print(f"\nTempo is running at {stack.url}/  (Ctrl-C stops everything)\n",
                  flush=True)
            if setup_code is not None and setup_code.exists():
                print(f"Setup code for creating the account: {setup_code.read_text().strip()}"
                      f"\n  (from {setup_code}; it opens nothing once the account exists)\n",
                      flush=True)
            await stopped
        elif starting.done():
            print(f"stack   | could not start: {starting.exception()}", file=sys.stderr)
            return 1
    finally:
        starting.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await starting
        print("stack   | stopping", flush=True)
        await stack.stop()
        stopped.cancel()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.stack",
                                     description="Run the whole Tempo stack on this machine.")
    parser.add_argument("--var", default=str(ROOT / "var"),
                        help="state folder: embedded database, secrets, media, logs")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORTS["gateway"],
                        help="gateway port; auth and media take the next two")
    parser.add_argument("--production", action="store_true",
                        help="production mode (Secure cookies: needs HTTPS in front)")
    args = parser.parse_args(argv)
    return asyncio.run(_serve(args, Path(args.var).resolve()))
