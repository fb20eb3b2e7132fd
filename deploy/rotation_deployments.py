"""Where rotation acts: a deployment restarts services, changes role passwords and
records each step in the audit trail; directly on the database, or through docker compose."""

from __future__ import annotations

import asyncio
import shlex

# docker compose is run with an argument list, never through a shell.
import subprocess  # nosec B404
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from deploy.rotation_files import AUDIT_ACTION, PLAIN_WORD, RotationError
from services.auth.store import insert_event


class Deployment(Protocol):
    """What a rotation needs from where the services run."""

    def role_name(self, service: str) -> str: ...

    async def restart(self, service: str) -> None: ...

    async def set_role_password(self, role: str, password: str) -> None: ...

    async def record(self, outcome: str, detail: dict[str, Any]) -> None: ...


async def alter_role_password(admin: asyncpg.Connection, role: str, password: str) -> None:
    # Quoted by the server (format %I/%L); nothing is spliced into SQL text here.
    statement = await admin.fetchval("SELECT format('ALTER ROLE %I PASSWORD %L', $1::text,"
                                     " $2::text)", role, password)
    await admin.execute(statement)


class DatabaseDeployment:
    """Roles and the audit trail through a superuser URL; restarts through a callback."""

    def __init__(self, admin_url: str, role_names: dict[str, str],
                 restart: Callable[[str], Any]) -> None:
        self._admin_url = admin_url
        self._roles = role_names
        self._restart = restart

    def role_name(self, service: str) -> str:
        return self._roles[service]

    async def restart(self, service: str) -> None:
        result = self._restart(service)
        if asyncio.iscoroutine(result):
            await result

    async def set_role_password(self, role: str, password: str) -> None:
        admin = await asyncpg.connect(self._admin_url)
        try:
            await alter_role_password(admin, role, password)
        finally:
            await admin.close()

    async def record(self, outcome: str, detail: dict[str, Any]) -> None:
        admin = await asyncpg.connect(self._admin_url)
        try:
            await insert_event(admin, event=AUDIT_ACTION, outcome=outcome, user_id=None,
                               username=None, ip=None, user_agent="deploy.rotate",
                               request_id=None, detail=detail, actor="admin")
        finally:
            await admin.close()


def stack_deployment(stack: Any) -> DatabaseDeployment:
    """A running ``deploy.stack.Stack``: its roles, its admin URL, its restart."""
    parts = urlsplit(stack.admin_url)
    admin_url = urlunsplit((parts.scheme, parts.netloc, f"/{stack.database}", parts.query, ""))
    return DatabaseDeployment(admin_url, dict(stack.role_names), stack.restart)


class ComposeDeployment:
    """``docker compose`` in ``project``; with ``dry_run`` the commands are only printed."""

    def __init__(self, project: Path, *, dry_run: bool = False, database: str = "tempo",
                 role_prefix: str = "tempo",
                 echo: Callable[[str], None] = print) -> None:
        self.project = project
        self.dry_run = dry_run
        self.database = database
        self.role_prefix = role_prefix
        self.echo = echo

    def role_name(self, service: str) -> str:
        return f"{self.role_prefix}_{service}"

    def _run(self, arguments: Sequence[str], stdin: str | None = None,
             shown_stdin: str | None = None) -> None:
        command = ["docker", "compose", *arguments]
        self.echo("$ " + shlex.join(command) + (f"  <<< {shown_stdin}" if shown_stdin else ""))
        if self.dry_run:
            return
        # An argument list of fixed words and role names, no shell.
        completed = subprocess.run(command, cwd=self.project, input=stdin,  # noqa: S603  # nosec B603
                                   text=True, check=False)
        if completed.returncode != 0:
            raise RotationError(f"{shlex.join(command)} exited {completed.returncode}")

    def _psql(self, sql: str, shown: str) -> None:
        self._run(["exec", "-T", "postgres", "psql", "--username", "postgres", "--dbname",
                   self.database, "--set", "ON_ERROR_STOP=1", "--quiet"], stdin=sql,
                  shown_stdin=shown)

    async def restart(self, service: str) -> None:
        self._run(["up", "--detach", "--no-deps", "--force-recreate", "--wait", service])

    async def set_role_password(self, role: str, password: str) -> None:
        # Generated passwords are URL-safe base64, so quoting them is plain; psql reads them
        # from standard input, never from a command line other users could list.
        if not password.replace("-", "").replace("_", "").isalnum():
            raise RotationError("refusing a password that is not URL-safe base64")
        self._psql(f"\\set pw '{password}'\nALTER ROLE \"{role}\" PASSWORD :'pw';\n",
                   f"ALTER ROLE \"{role}\" PASSWORD '********'")

    async def record(self, outcome: str, detail: dict[str, Any]) -> None:
        # psql quotes each value itself (:'name'); the values are checked words anyway.
        words = {"action": AUDIT_ACTION, "outcome": outcome,
                 **{f"d_{key}": str(value).lower() for key, value in detail.items()}}
        if not all(PLAIN_WORD.fullmatch(f"{key}{value}") for key, value in words.items()):
            raise RotationError("audit detail must be plain words")
        settings = "".join(f"\\set {key} '{value}'\n" for key, value in words.items())
        pairs = ", ".join(f"'{key}', :'d_{key}'" for key in detail)
        # Every value reaches SQL as a psql variable; only checked key names are spliced.
        sql = (settings + "INSERT INTO auth.auth_events (event, outcome, actor, user_agent,"  # noqa: S608  # nosec B608
               f" detail) VALUES (:'action', :'outcome', 'admin', 'deploy.rotate',"
               f" jsonb_build_object({pairs}));\n")
        self._psql(sql, sql.strip().replace("\n", "; "))
