"""Secrets for a deployment, generated once and kept as files readable by their owner only.

``python -m deploy.generate_secrets [DIR]`` writes the files ``docker-compose.yml`` mounts as
Docker secrets (default ``deploy/secrets/``, which git ignores). An existing file is never
overwritten, so running it again is safe and only fills in what is missing.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path

# The services' image runs as this uid/gid (deploy/Dockerfile); PostgreSQL and Redis are
# added to the group so each container can read exactly the secret files mounted into it.
SERVICE_GID = 10001

SERVICE_ROLES = ("auth", "media", "gateway")

# name -> length in bytes of randomness (token_urlsafe gives about 1.3 characters a byte)
SECRET_FILES: dict[str, int] = {
    "jwt_key": 48,
    "internal_key": 48,
    "db_auth_password": 32,
    "db_media_password": 32,
    "db_gateway_password": 32,
    "postgres_password": 32,
    "db_restore_password": 32,
    # What the first registration must present (Auth__SetupCode_FILE), so that whoever
    # reaches a new deployment first cannot claim it; useless once the account exists.
    "setup_code": 24,
}


def write_secret(path: Path, value: str) -> None:
    """Create ``path`` with mode 0600 before a byte is written, so it is never readable."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(value)


def ensure_secrets(folder: Path, names: dict[str, int] | None = None) -> dict[str, Path]:
    """Every secret file under ``folder``, generating the missing ones; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    paths = {}
    for name, size in (names or SECRET_FILES).items():
        path = folder / name
        if not path.exists() or path.stat().st_size == 0:
            path.unlink(missing_ok=True)
            write_secret(path, secrets.token_urlsafe(size))
        path.chmod(0o600)
        paths[name] = path
    return paths


def ensure_backup_keys(folder: Path) -> Path:
    """An age key pair for backups. Only the recipient (public) is needed on the server:
    move ``backup_identity`` somewhere safe and off this machine."""
    recipient = folder / "backup_recipient"
    if not recipient.exists():
        try:
            import pyrage
        except ImportError:
            print("note: no backup key pair made (pyrage is not installed); make one with "
                  f"age-keygen -o {folder}/backup_identity && age-keygen -y "
                  f"{folder}/backup_identity > {recipient}", file=sys.stderr)
            return recipient
        identity = pyrage.x25519.Identity.generate()
        write_secret(folder / "backup_identity", f"{identity}\n")
        write_secret(recipient, f"{identity.to_public()}\n")
        print(f"note: {folder / 'backup_identity'} decrypts every backup: store it offline "
              "(a password manager, paper) and delete it from this machine", file=sys.stderr)
    return recipient


def ensure_backup_signing_key(folder: Path) -> Path:
    """The Ed25519 key that signs every backup, and its public verify key. The signing key
    stays with these secrets and never with the backups: with only the recipient anyone
    can make a file that decrypts, so verify and restore trust only what this key signed."""
    from deploy.backup.signing import load_signing_key, new_key_pair, verify_key_pem

    signing_key = folder / "backup_signing_key"
    verify_key = folder / "backup_verify_key"
    if not signing_key.exists():
        private, _public = new_key_pair()
        verify_key.unlink(missing_ok=True)
        write_secret(signing_key, private.decode())
    if not verify_key.exists():
        write_secret(verify_key, verify_key_pem(load_signing_key(signing_key)).decode())
    return verify_key


def share_with_containers(folder: Path) -> None:
    """Group-readable by the containers' group, when run as root; otherwise owner-only."""
    if os.geteuid() != 0:
        print(f"note: not root; give gid {SERVICE_GID} read access to {folder}/* yourself "
              "(chgrp 10001, chmod 0440) or the containers cannot read them", file=sys.stderr)
        return
    os.chown(folder, 0, SERVICE_GID)
    folder.chmod(0o750)
    for path in folder.iterdir():
        if path.is_file() and path.name != "backup_identity":
            os.chown(path, 0, SERVICE_GID)
            path.chmod(0o440)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.generate_secrets",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", default="deploy/secrets", type=Path)
    args = parser.parse_args(argv)
    paths = ensure_secrets(args.folder)
    # Empty until a rotation fills them; compose mounts them from the start.
    from deploy.rotate import ensure_previous_key_files

    for path in ensure_previous_key_files(args.folder).values():
        paths[path.name] = path
    paths["backup_recipient"] = ensure_backup_keys(args.folder)
    paths["backup_verify_key"] = ensure_backup_signing_key(args.folder)
    paths["backup_signing_key"] = args.folder / "backup_signing_key"
    share_with_containers(args.folder)
    for name in paths:
        print(f"{args.folder / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
