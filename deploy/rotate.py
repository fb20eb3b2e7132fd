"""Rotate the secrets of a running deployment, one service at a time, nobody logged out.

    python -m deploy.rotate jwt        [--compose | --var DIR] [--dry-run]
    python -m deploy.rotate internal   [--compose | --var DIR] [--dry-run]
    python -m deploy.rotate jwt --drop-previous [--force]
    python -m deploy.rotate db         [--compose | --var DIR]

A signing key (``jwt`` for the users' tokens, ``internal`` for the gateway's identity
tokens) is rotated in two steps:

1. A new key becomes current and the old one moves to the previous list
   (``*_previous_keys``, read through ``JWT__PreviousSecretKeys_FILE`` and
   ``Internal__PreviousSecretKeys_FILE``). Services restart one at a time, those that only
   verify first: a verifier that knows both keys accepts whatever the not-yet-restarted
   signer still issues, and tokens already out stay valid.
2. Once the longest token signed with the old key has expired (``JWT__ExpirationDays``;
   a minute for internal tokens), ``--drop-previous`` empties the list and restarts again.
   It refuses to run earlier unless ``--force`` is given.

``db`` gives each service role a new password: the new secret file is written, then
``ALTER ROLE ... PASSWORD``, then that service restarts and connects with it.

Every step is written to the audit trail (``auth.auth_events``, action
``secrets_rotate``, actor ``admin``), never with a secret in it.

``--compose`` runs ``docker compose`` (``up -d --no-deps --force-recreate --wait <svc>``
for restarts, ``exec postgres psql`` for SQL) from the current folder, on the secrets in
``deploy/secrets``; ``--dry-run`` prints those commands instead. Without ``--compose``,
the secrets of a local ``python -m deploy.stack`` under ``--var`` are rotated and the
stack is to be restarted (the old key stays accepted meanwhile). Tests and other Python
callers drive a running ``deploy.stack.Stack`` through ``StackDeployment``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import secrets
import shlex

# docker compose is run with an argument list, never through a shell.
import subprocess  # nosec B404
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from services.auth.store import insert_event
from shared.config import (
    DATABASE_PASSWORD,
    INTERNAL_KEY,
    INTERNAL_PREVIOUS_KEYS,
    JWT_KEY,
    JWT_PREVIOUS_KEYS,
    SERVICE_SECRETS,
    SETUP_CODE,
)

SERVICES = ("auth", "media", "gateway")
_WORD = re.compile(r"[A-Za-z0-9_]+")
STATE_FILE = "rotation_state.json"
AUDIT_ACTION = "secrets_rotate"
INTERNAL_TOKEN_SECONDS = 60
# Clock skew between hosts, on top of the longest token lifetime.
DROP_MARGIN_SECONDS = 300
KEY_BYTES = 48
PASSWORD_BYTES = 32


class RotationError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class KeySpec:
    name: str
    current_file: str
    previous_file: str
    # Verifiers first, the signer last, so that nothing ever meets a key it cannot check.
    restart_order: tuple[str, ...]


def _holders(setting: str) -> list[str]:
    return [service for service in SERVICES if setting in SERVICE_SECRETS[service]]


def _restart_order(current: str, previous: str) -> tuple[str, ...]:
    """Who holds the key: the verifiers (they hold the previous keys) before the signer.
    A service that holds neither is never restarted for it."""
    verifiers = _holders(previous)
    return (*verifiers, *(s for s in _holders(current) if s not in verifiers))


KEYS = {
    "jwt": KeySpec("jwt", "jwt_key", "jwt_previous_keys",
                   _restart_order(JWT_KEY, JWT_PREVIOUS_KEYS)),
    "internal": KeySpec("internal", "internal_key", "internal_previous_keys",
                        _restart_order(INTERNAL_KEY, INTERNAL_PREVIOUS_KEYS)),
}
PREVIOUS_KEY_SETTINGS = {
    JWT_PREVIOUS_KEYS: "jwt_previous_keys",
    INTERNAL_PREVIOUS_KEYS: "internal_previous_keys",
}


def password_file(service: str) -> str:
    return f"db_{service}_password"


def secret_files(service: str) -> dict[str, str]:
    """The secret files a service is given, by the setting whose ``_FILE`` names each:
    exactly the secrets it reads (``shared.config.SERVICE_SECRETS``)."""
    files = {JWT_KEY: "jwt_key", INTERNAL_KEY: "internal_key",
             DATABASE_PASSWORD: password_file(service), SETUP_CODE: "setup_code",
             **PREVIOUS_KEY_SETTINGS}
    return {setting: files[setting] for setting in SERVICE_SECRETS[service]}


# ------------------------------------------------------------------ secret files

def ensure_previous_key_files(folder: Path) -> dict[str, Path]:
    """The (possibly empty) previous-key files, created if missing; setting -> path."""
    paths = {}
    for setting, name in PREVIOUS_KEY_SETTINGS.items():
        path = folder / name
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.close(fd)
        paths[setting] = path
    return paths


def read_secret(path: Path) -> str:
    return path.read_text(encoding="utf-8").strip()


def read_list(path: Path) -> list[str]:
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8").replace(",", "\n")
    return [line.strip() for line in text.splitlines() if line.strip()]


def replace_secret(path: Path, value: str) -> None:
    """Write ``value`` to ``path`` atomically, keeping the old file's owner and mode.

    A reader sees the old content or the new, never half of one; the temporary file is
    private from its first byte.
    """
    mode, uid, gid = 0o600, None, None
    with contextlib.suppress(FileNotFoundError):
        info = path.stat()
        mode, uid, gid = info.st_mode & 0o777, info.st_uid, info.st_gid
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(value)
            handle.flush()
            os.fsync(handle.fileno())
        if uid is not None and (uid, gid) != (os.geteuid(), os.getegid()):
            # Only root may give a file away; the compose secrets belong to root:10001.
            with contextlib.suppress(PermissionError):
                os.chown(temporary, uid, gid)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def new_key() -> str:
    return secrets.token_urlsafe(KEY_BYTES)


def new_password() -> str:
    return secrets.token_urlsafe(PASSWORD_BYTES)


def _load_state(folder: Path) -> dict[str, Any]:
    try:
        state = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _save_state(folder: Path, state: dict[str, Any]) -> None:
    replace_secret(folder / STATE_FILE, json.dumps(state, indent=2, sort_keys=True) + "\n")


# ------------------------------------------------------------------ deployments

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
        if not all(_WORD.fullmatch(f"{key}{value}") for key, value in words.items()):
            raise RotationError("audit detail must be plain words")
        settings = "".join(f"\\set {key} '{value}'\n" for key, value in words.items())
        pairs = ", ".join(f"'{key}', :'d_{key}'" for key in detail)
        # Every value reaches SQL as a psql variable; only checked key names are spliced.
        sql = (settings + "INSERT INTO auth.auth_events (event, outcome, actor, user_agent,"  # noqa: S608  # nosec B608
               f" detail) VALUES (:'action', :'outcome', 'admin', 'deploy.rotate',"
               f" jsonb_build_object({pairs}));\n")
        self._psql(sql, sql.strip().replace("\n", "; "))


# ------------------------------------------------------------------ the steps

async def _audited(deployment: Deployment, detail: dict[str, Any], step) -> None:
    try:
        await step()
    except BaseException:
        with contextlib.suppress(Exception):
            await deployment.record("failure", detail)
        raise
    await deployment.record("success", detail)


async def rotate_key(folder: Path, which: str, deployment: Deployment, *,
                     now: float | None = None) -> None:
    """Step 1: a new current key, the old one kept for verification; rolling restart."""
    spec = KEYS[which]
    ensure_previous_key_files(folder)
    current_path, previous_path = folder / spec.current_file, folder / spec.previous_file

    async def step() -> None:
        old = read_secret(current_path)
        previous = [key for key in read_list(previous_path) if key != old]
        # The previous list is written first: at no moment does a file hold a key set
        # that has lost the key tokens are being signed with.
        replace_secret(previous_path, "\n".join([old, *previous]) + "\n")
        replace_secret(current_path, new_key())
        state = _load_state(folder)
        state[which] = {"rotatedAt": int(time.time() if now is None else now)}
        _save_state(folder, state)
        for service in spec.restart_order:
            await deployment.restart(service)

    await _audited(deployment, {"secret": which, "step": "rotate"}, step)


def drop_allowed_at(folder: Path, which: str, max_token_seconds: int) -> float | None:
    rotated = _load_state(folder).get(which, {}).get("rotatedAt")
    if not isinstance(rotated, int | float):
        return None
    return rotated + max_token_seconds + DROP_MARGIN_SECONDS


async def drop_previous(folder: Path, which: str, deployment: Deployment, *,
                        max_token_seconds: int, force: bool = False,
                        now: float | None = None) -> None:
    """Step 2: forget the old keys once every token they signed has expired."""
    spec = KEYS[which]
    moment = time.time() if now is None else now
    allowed = drop_allowed_at(folder, which, max_token_seconds)
    if not force and (allowed is None or moment < allowed):
        when = "an unknown time" if allowed is None else time.strftime(
            "%Y-%m-%d %H:%M:%S UTC", time.gmtime(allowed))
        raise RotationError(f"tokens signed with the previous {which} key may still be valid "
                            f"until {when}; wait, or pass --force to log them out")
    ensure_previous_key_files(folder)

    async def step() -> None:
        replace_secret(folder / spec.previous_file, "")
        for service in spec.restart_order:
            await deployment.restart(service)

    await _audited(deployment, {"secret": which, "step": "drop_previous",
                                "forced": bool(force)}, step)


async def rotate_database_passwords(folder: Path, deployment: Deployment,
                                    services: Sequence[str] = SERVICES) -> None:
    """A new password for each service role, then that service restarts to use it."""
    for service in services:
        path = folder / password_file(service)

        async def step(service: str = service, path: Path = path) -> None:
            old = read_secret(path)
            password = new_password()
            replace_secret(path, password)
            try:
                await deployment.set_role_password(deployment.role_name(service), password)
            except BaseException:
                # The role still has the old password: so must the file.
                replace_secret(path, old)
                raise
            await deployment.restart(service)

        await _audited(deployment, {"secret": f"db_{service}_password", "step": "rotate"},
                       step)


# ------------------------------------------------------------------ command line

def _max_token_seconds(which: str, expiration_days: int) -> int:
    return INTERNAL_TOKEN_SECONDS if which == "internal" else expiration_days * 86400


class _LocalStackDeployment(DatabaseDeployment):
    """A ``python -m deploy.stack`` on this machine: its files are changed here and the
    restart is left to the operator, who is told when."""

    def __init__(self, admin_url: str | None, role_names: dict[str, str]) -> None:
        super().__init__(admin_url or "", role_names, self._note)
        self._noted = False

    def _note(self, service: str) -> None:
        if not self._noted:
            print("restart the stack (Ctrl-C, then make run) to load the new secrets; "
                  "tokens signed with the old key stay valid meanwhile")
            self._noted = True

    async def set_role_password(self, role: str, password: str) -> None:
        if not self._admin_url:
            raise RotationError("--admin-url is needed to change database passwords")
        await super().set_role_password(role, password)

    async def record(self, outcome: str, detail: dict[str, Any]) -> None:
        if not self._admin_url:
            print(f"audit: {AUDIT_ACTION} {outcome} {json.dumps(detail)} (not stored: no "
                  "--admin-url)")
            return
        await super().record(outcome, detail)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.rotate",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("target", choices=("jwt", "internal", "db"))
    parser.add_argument("--drop-previous", action="store_true",
                        help="step 2: forget the previous key once its tokens have expired")
    parser.add_argument("--force", action="store_true",
                        help="drop the previous key now, logging out its tokens' holders")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--compose", action="store_true",
                       help="run docker compose in the current folder")
    where.add_argument("--var", type=Path, default=Path("var"),
                       help="the local stack's state folder (default ./var)")
    parser.add_argument("--secrets", type=Path,
                        help="the secrets folder (default deploy/secrets or VAR/secrets)")
    parser.add_argument("--dry-run", action="store_true",
                        help="with --compose: print the commands instead of running them")
    parser.add_argument("--admin-url", help="local stack: a superuser database URL, for "
                        "db passwords and the audit record")
    parser.add_argument("--expiration-days", type=int,
                        # The deployment's own setting name, in its own case.
                        default=int(os.environ.get("JWT__ExpirationDays", "7")),  # noqa: SIM112
                        help="JWT__ExpirationDays of the deployment (default 7)")
    args = parser.parse_args(argv)

    deployment: Deployment
    if args.compose:
        folder = args.secrets or Path("deploy/secrets")
        deployment = ComposeDeployment(Path.cwd(), dry_run=args.dry_run)
    else:
        folder = args.secrets or args.var / "secrets"
        deployment = _LocalStackDeployment(
            args.admin_url, {name: f"tempo_{name}" for name in SERVICES})
    if not folder.is_dir():
        print(f"rotate: no secrets folder at {folder}", file=sys.stderr)
        return 2
    if args.dry_run and args.compose:
        print(f"(dry run: secret files in {folder} are changed for real only without "
              "--dry-run)")
        return _dry_run(args, deployment)
    try:
        if args.target == "db":
            asyncio.run(rotate_database_passwords(folder, deployment))
        elif args.drop_previous:
            asyncio.run(drop_previous(folder, args.target, deployment, force=args.force,
                                      max_token_seconds=_max_token_seconds(
                                          args.target, args.expiration_days)))
        else:
            asyncio.run(rotate_key(folder, args.target, deployment))
            allowed = drop_allowed_at(folder, args.target,
                                      _max_token_seconds(args.target, args.expiration_days))
            if allowed is not None:
                print(f"rotated {args.target}; run with --drop-previous after "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(allowed))}")
    except (RotationError, OSError, asyncpg.PostgresError) as exc:
        print(f"rotate: {exc}", file=sys.stderr)
        return 1
    return 0


def _dry_run(args: argparse.Namespace, deployment: Deployment) -> int:
    """The commands a rotation would run, without touching a file or a container."""
    async def show() -> None:
        if args.target == "db":
            for service in SERVICES:
                print(f"# write deploy/secrets/{password_file(service)} (new password)")
                await deployment.set_role_password(deployment.role_name(service),
                                                   new_password())
                await deployment.restart(service)
            return
        spec = KEYS[args.target]
        if args.drop_previous:
            print(f"# empty deploy/secrets/{spec.previous_file}")
        else:
            print(f"# move deploy/secrets/{spec.current_file} into {spec.previous_file}; "
                  f"write a new {spec.current_file}")
        for service in spec.restart_order:
            await deployment.restart(service)
        await deployment.record("success", {"secret": args.target, "step": "rotate"})

    asyncio.run(show())
    return 0


if __name__ == "__main__":
    sys.exit(main())
