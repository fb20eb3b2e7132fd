"""What every part of the backup tool shares: its error, the archive's names, and reading
a key or password file."""

from __future__ import annotations

import re
from pathlib import Path

FORMAT_VERSION = 1
PREFIX = "tempo-backup"
MANIFEST = f"{PREFIX}/manifest.json"
DATABASE_PART = f"{PREFIX}/database/part-"
MEDIA_PREFIX = f"{PREFIX}/media/"
PART_SIZE = 8 * 1024 * 1024
CHUNK = 1024 * 1024
NAME_PATTERN = re.compile(r"tempo-(\d{8}T\d{6}Z)\.age")


class BackupError(Exception):
    """A backup cannot be made, read or restored; the message says why."""


def read_secret_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise BackupError(f"cannot read {path}: {exc.strerror}") from None
