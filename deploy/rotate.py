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
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg

from deploy.rotation_deployments import (
    ComposeDeployment,
    DatabaseDeployment,
    Deployment,
    stack_deployment,
)
from deploy.rotation_files import (
    AUDIT_ACTION,
    DROP_MARGIN_SECONDS,
    INTERNAL_TOKEN_SECONDS,
    KEYS,
    SERVICES,
    RotationError,
    ensure_previous_key_files,
    load_state,
    new_key,
    new_password,
    password_file,
    read_list,
    read_secret,
    replace_secret,
    save_state,
    secret_files,
)

# The names callers and tests use, wherever they now live.
__all__ = [
    "DROP_MARGIN_SECONDS", "SERVICES", "ComposeDeployment", "DatabaseDeployment",
    "Deployment", "RotationError", "drop_allowed_at", "drop_previous",
    "ensure_previous_key_files", "main", "read_list", "replace_secret",
    "rotate_database_passwords", "rotate_key", "secret_files", "stack_deployment",
]


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
        state = load_state(folder)
        state[which] = {"rotatedAt": int(time.time() if now is None else now)}
        save_state(folder, state)
        for service in spec.restart_order:
            await deployment.restart(service)

    await _audited(deployment, {"secret": which, "step": "rotate"}, step)


def drop_allowed_at(folder: Path, which: str, max_token_seconds: int) -> float | None:
    rotated = load_state(folder).get(which, {}).get("rotatedAt")
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
