"""Run the auth service, or its admin command.

    python -m services.auth
    python -m services.auth reset-password --username NAME   < new-password
"""

from __future__ import annotations

import argparse
import sys

from services.auth.settings import SERVICE, load_settings
from shared.service import load_or_exit, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.auth",
                                     description="Tempo auth service")
    commands = parser.add_subparsers(dest="command")
    reset = commands.add_parser(
        "reset-password",
        help="set a new password (read from standard input) and revoke every session")
    reset.add_argument("--username", required=True)
    args = parser.parse_args(argv)

    settings = load_or_exit(load_settings, SERVICE)
    if args.command == "reset-password":
        from services.auth.admin import reset_password

        return reset_password(settings, args.username)

    from services.auth.app import create_app

    common = settings.common
    run(create_app(settings), service=SERVICE, host=common.host, port=common.port,
        log_level=common.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
