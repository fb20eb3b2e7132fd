"""What rotation rotates: the keys and their holders, the secret files each service reads,
and the state kept between the two steps of a key rotation."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
PLAIN_WORD = re.compile(r"[A-Za-z0-9_]+")
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


def load_state(folder: Path) -> dict[str, Any]:
    try:
        state = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def save_state(folder: Path, state: dict[str, Any]) -> None:
    replace_secret(folder / STATE_FILE, json.dumps(state, indent=2, sort_keys=True) + "\n")
