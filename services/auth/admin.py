"""``python -m services.auth reset-password --username NAME``: the way back in.

Registration is locked after the first user, so a forgotten password has no other remedy.
The new password is read from standard input (one line; a terminal asks twice), must pass
the same policy as any other, and every session of the user is revoked.
"""

from __future__ import annotations

import asyncio
import getpass
import socket
import sys
from typing import TextIO

from services.auth import accounts
from services.auth.app import MIGRATIONS
from services.auth.audit import Origin
from services.auth.hashing import Hasher
from services.auth.settings import SERVICE, AuthSettings
from shared.audit import ACTOR_ADMIN
from shared.db import create_pool, migrate
from shared.errors import ServiceError
from shared.log import configure_logging
from shared.tokens import TokenCodec

EXIT_FAILED = 1


def read_new_password(stream: TextIO) -> str:
    if stream.isatty():
        first = getpass.getpass("New password: ")
        second = getpass.getpass("Repeat it: ")
        if first != second:
            raise ValueError("the two passwords differ")
        return first
    line = stream.readline()
    # Only the line ending is not part of the password; spaces are.
    return line.rstrip("\r\n")


async def _reset(settings: AuthSettings, username: str, password: str) -> int:
    jwt = settings.jwt
    pool = await create_pool(settings.common.database_url.reveal(), schema=SERVICE, max_size=2)
    hasher = Hasher(settings.bcrypt_cost, workers=1, queue_size=1)
    try:
        async with pool.acquire() as connection:
            await migrate(connection, SERVICE, MIGRATIONS)
        services = accounts.Services(
            pool=pool, hasher=hasher, settings=settings,
            tokens=TokenCodec(jwt.keys, issuer=jwt.issuer, audience=jwt.audience,
                              lifetime_seconds=settings.token_lifetime_seconds))
        origin = Origin(ip=None, user_agent=f"admin-cli@{socket.gethostname()}",
                        request_id=None, actor=ACTOR_ADMIN)
        return await accounts.reset_password(services, origin, username, password)
    finally:
        hasher.close()
        await pool.close()


def reset_password(settings: AuthSettings, username: str, stdin: TextIO = sys.stdin) -> int:
    """Run the reset; returns the process exit code and prints one clear line."""
    configure_logging(SERVICE, settings.common.log_level)
    try:
        password = read_new_password(stdin)
    except (ValueError, EOFError) as exc:
        print(f"reset-password: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if not password:
        print("reset-password: no password given on standard input", file=sys.stderr)
        return EXIT_FAILED
    try:
        revoked = asyncio.run(_reset(settings, username, password))
    except ServiceError as exc:
        print(f"reset-password: {exc.message}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:
        print(f"reset-password: cannot reach the database ({type(exc).__name__})",
              file=sys.stderr)
        return EXIT_FAILED
    print(f"reset-password: password changed; {revoked} session(s) revoked")
    return 0
