"""The database a backup reads or restores, and the PostgreSQL client tools that match it."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from deploy.backup.common import BackupError, read_secret_file

# The services' own settings, so a backup job can share their environment.
DATABASE_URL = "Database__Url"
DATABASE_PASSWORD = "Database__Password"  # noqa: S105 - the setting name


@dataclass(frozen=True, slots=True)
class Database:
    url: str              # without a password
    password: str | None

    def env(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        if self.password:
            env["PGPASSWORD"] = self.password
        return env


def database_from(url: str | None, password_file: str | None = None) -> Database:
    url = url or os.environ.get(DATABASE_URL)
    if not url:
        raise BackupError("give --database-url or set Database__Url")
    parts = urlsplit(url)
    password = parts.password
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "password"]
    password = dict(parse_qsl(parts.query)).get("password", password)
    password_file = password_file or os.environ.get(DATABASE_PASSWORD + "_FILE")
    if password_file:
        password = read_secret_file(Path(password_file))
    elif os.environ.get(DATABASE_PASSWORD):
        password = os.environ[DATABASE_PASSWORD]
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port:
        host += f":{parts.port}"
    user = f"{parts.username}@" if parts.username else ""
    clean = urlunsplit((parts.scheme, f"{user}{host}", parts.path, urlencode(query), ""))
    return Database(clean, password or None)


async def server_version(database: Database) -> int:
    connection = await asyncpg.connect(database.url, password=database.password, timeout=10)
    try:
        return int(await connection.fetchval("SHOW server_version_num"))
    finally:
        await connection.close()


def tool_major(path: str) -> int:
    output = subprocess.run([path, "--version"], capture_output=True, text=True,  # noqa: S603
                            check=True).stdout
    match = re.search(r"(\d+)(?:\.\d+)?", output)
    if match is None:
        raise BackupError(f"cannot tell the version of {path}")
    return int(match.group(1))


def find_tool(name: str, server_major: int) -> str:
    """The PostgreSQL client tool whose major version matches the server's (or is the
    closest newer one): pg_dump refuses a newer server, and an older pg_restore cannot
    read a newer dump."""
    candidates = []
    override = os.environ.get(name.upper().replace("-", "_"))
    if override:
        candidates.append(override)
    found = shutil.which(name)
    if found:
        candidates.append(found)
    candidates += sorted(str(p) for p in Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    # The embedded server of `make run` ships its own tools, next to its postgres binary.
    with contextlib.suppress(ImportError):
        from importlib.util import find_spec

        spec = find_spec("pgserver")
        if spec is not None and spec.origin:
            candidates.append(str(Path(spec.origin).parent / "pginstall" / "bin" / name))
    usable = []
    for candidate in dict.fromkeys(candidates):
        if not Path(candidate).exists():
            continue
        with contextlib.suppress(OSError, subprocess.CalledProcessError, BackupError):
            major = tool_major(candidate)
            if major >= server_major:
                usable.append((major, candidate))
    if not usable:
        raise BackupError(f"no {name} of version {server_major} or newer for a PostgreSQL "
                          f"{server_major} server (Debian: apt-get install "
                          f"postgresql-client-{server_major})")
    return min(usable)[1]

