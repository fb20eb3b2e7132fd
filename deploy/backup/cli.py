"""The command line: ``python -m deploy.backup create | verify | restore | prune``."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from deploy.backup.archive import create, verify
from deploy.backup.common import BackupError, read_secret_file
from deploy.backup.prune import backup_name, prune
from deploy.backup.restoring import restore
from deploy.backup.signing import load_signing_key, load_verify_key
from deploy.backup.streams import Keys, identities_from, recipients_from
from deploy.backup.tools import Database, database_from
from services.auth.store import insert_event

EXIT_FAILED = 1
MEDIA_ROOT = "MediaStorage__RootPath"


def _keys(args: argparse.Namespace, *, encrypting: bool) -> Keys:
    passphrase = None
    if getattr(args, "passphrase_file", None):
        passphrase = read_secret_file(Path(args.passphrase_file))
        if len(passphrase) < 12:
            raise BackupError("the passphrase must be at least 12 characters")
    if encrypting:
        values = list(args.recipient or [])
        values += [read_secret_file(Path(f)) for f in args.recipient_file or []]
        recipients = recipients_from(values)
        if bool(recipients) == bool(passphrase):
            raise BackupError("give recipients or a passphrase file (exactly one of them)")
        if not args.signing_key_file:
            raise BackupError("give --signing-key-file: every backup is signed")
        return Keys(recipients=recipients, passphrase=passphrase,
                    signing_key=load_signing_key(Path(args.signing_key_file)))
    if not args.verify_key_file:
        raise BackupError("give --verify-key-file: only signed backups are read")
    verify_key = load_verify_key(Path(args.verify_key_file))
    identities: tuple[object, ...] = ()
    if getattr(args, "identity_file", None):
        identities = identities_from(read_secret_file(Path(args.identity_file)))
    if not identities and passphrase is None:
        raise BackupError("give --identity-file or --passphrase-file")
    return Keys(identities=identities, passphrase=passphrase, verify_key=verify_key)


def _media_root(value: str | None) -> Path:
    value = value or os.environ.get(MEDIA_ROOT)
    if not value:
        raise BackupError("give --media-root or set MediaStorage__RootPath")
    return Path(value)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m deploy.backup",
                                     description="Encrypted backups of Tempo.")
    commands = parser.add_subparsers(dest="command", required=True)

    def target(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--database-url", help="default: Database__Url")
        sub.add_argument("--database-password-file", help="default: Database__Password_FILE")
        sub.add_argument("--media-root", help="default: MediaStorage__RootPath")

    create_cmd = commands.add_parser("create", help="write a new encrypted backup")
    where = create_cmd.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", help="the backup file to write")
    where.add_argument("--out-dir", help="a folder: the file is named tempo-<UTC time>.age")
    create_cmd.add_argument("--recipient", action="append", help="an age recipient (age1...)")
    create_cmd.add_argument("--recipient-file", action="append",
                            help="a file of age recipients, one a line")
    create_cmd.add_argument("--passphrase-file")
    create_cmd.add_argument("--signing-key-file",
                            help="the Ed25519 key (PEM) that signs the backup")
    target(create_cmd)

    for name, text in (("verify", "check the signature, decrypt and check every checksum"),
                       ("restore", "restore into an empty database and media root")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--in", dest="input", required=True)
        sub.add_argument("--identity-file", help="age identities (AGE-SECRET-KEY-...)")
        sub.add_argument("--passphrase-file")
        sub.add_argument("--verify-key-file",
                         help="the public key (PEM) of the key that signs the backups")
        if name == "restore":
            target(sub)

    prune_cmd = commands.add_parser("prune", help="delete backups beyond the retention")
    prune_cmd.add_argument("--dir", required=True)
    prune_cmd.add_argument("--keep-daily", type=int, default=7)
    prune_cmd.add_argument("--keep-weekly", type=int, default=4)
    prune_cmd.add_argument("--keep-monthly", type=int, default=12)
    prune_cmd.add_argument("--dry-run", action="store_true")
    return parser


async def _insert_audit(database: Database, action: str, outcome: str, detail: dict) -> None:
    connection = await asyncpg.connect(database.url, password=database.password, timeout=10)
    try:
        await insert_event(connection, event=action, outcome=outcome, user_id=None,
                           username=None, ip=None, user_agent="deploy.backup",
                           request_id=None, detail=detail, actor="admin")
    finally:
        await connection.close()


def audit(database: Database | None, action: str, outcome: str, **detail: object) -> None:
    """Record the command in the audit trail; a trail that cannot be reached (a failed
    restore leaves an empty database) is reported, not fatal."""
    if database is None:
        return
    try:
        asyncio.run(_insert_audit(database, action, outcome, detail))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        print(f"backup: warning: the {action} was not recorded in the audit trail "
              f"({type(exc).__name__})", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    database: Database | None = None
    try:
        if args.command in {"create", "restore"}:
            database = database_from(args.database_url, args.database_password_file)
        if args.command == "create":
            keys = _keys(args, encrypting=True)
            if args.out:
                out = Path(args.out)
            else:
                Path(args.out_dir).mkdir(parents=True, exist_ok=True)
                out = Path(args.out_dir) / backup_name(datetime.now(UTC))
            # Copies of the backup folder go off-host; the key that vouches for them must not.
            if Path(args.signing_key_file).resolve().parent == out.parent.resolve():
                raise BackupError("the signing key must not sit with the backups: keep it "
                                  "with the other secrets")
            manifest = create(out, keys, database, _media_root(args.media_root))
            audit(database, "backup", "success", file=out.name,
                  entries=len(manifest["files"]))
            print(f"backup written: {out} ({len(manifest['files'])} entries, "
                  f"database {manifest['database']['size']} bytes)")
        elif args.command == "verify":
            manifest = verify(Path(args.input), _keys(args, encrypting=False))
            print(f"backup verified: {args.input} ({len(manifest['files'])} entries, "
                  f"made {manifest['createdAt']})")
        elif args.command == "restore":
            manifest = restore(Path(args.input), _keys(args, encrypting=False),
                               database, _media_root(args.media_root))
            audit(database, "restore", "success", file=Path(args.input).name,
                  entries=len(manifest["files"]))
            print(f"backup restored and verified: {args.input} "
                  f"({len(manifest['files'])} entries)")
        else:
            removed = prune(Path(args.dir), daily=args.keep_daily, weekly=args.keep_weekly,
                            monthly=args.keep_monthly, dry_run=args.dry_run)
            verb = "would remove" if args.dry_run else "removed"
            for path in removed:
                print(f"{verb} {path}")
            print(f"{len(removed)} backup(s) {verb}")
    except BackupError as exc:
        print(f"backup: error: {exc}", file=sys.stderr)
        if args.command in {"create", "restore"}:
            audit(database, "backup" if args.command == "create" else "restore", "failure",
                  error=type(exc).__name__)
        return EXIT_FAILED
    return 0


