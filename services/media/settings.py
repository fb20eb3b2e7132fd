"""The media service's settings: the common ones plus ``MediaStorage__*``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from services.media.imports.settings import ImportSettings, load_import_settings
from shared.audit import DEFAULT_RETENTION_DAYS, retention_days
from shared.config import CommonSettings, Env, SettingsError, load_common

SERVICE = "media"
DEFAULT_PORT = 8082
DEFAULT_MAX_FILE_SIZE_BYTES = 52_428_800
DEFAULT_MAX_FILES_PER_REQUEST = 20
# Where a development instance keeps its files when no root is configured.
DEVELOPMENT_ROOT = Path("var/media")


@dataclass(frozen=True, slots=True)
class StorageSettings:
    root: Path
    max_file_size_bytes: int
    max_files_per_request: int
    # Per-user total of stored bytes; None means no quota.
    quota_bytes: int | None
    sweep_interval_seconds: int
    temp_max_age_seconds: int
    # Files younger than this are not called orphans: an upload may be between its
    # rename into place and its commit.
    orphan_grace_seconds: int


@dataclass(frozen=True, slots=True)
class MediaSettings:
    common: CommonSettings
    storage: StorageSettings
    imports: ImportSettings = field(default_factory=ImportSettings)
    audit_retention_days: int = DEFAULT_RETENTION_DAYS


def _storage_root(env: Env, development: bool) -> Path:
    name = "MediaStorage__RootPath"
    value = env.str(name)
    if value is None:
        if development:
            return DEVELOPMENT_ROOT.resolve()
        env.problem(name, "is required (an absolute path outside any web root)")
        return DEVELOPMENT_ROOT.resolve()
    path = Path(value)
    if not path.is_absolute():
        env.problem(name, "must be an absolute path")
        return DEVELOPMENT_ROOT.resolve()
    if "\x00" in value or any(part == ".." for part in path.parts):
        env.problem(name, "must not contain '..' components")
    return path


def load_settings(environ: Mapping[str, str] | None = None) -> MediaSettings:
    env = Env(environ)
    common = load_common(env, SERVICE, DEFAULT_PORT)
    root = _storage_root(env, common.development)
    quota = env.int("MediaStorage__QuotaBytes", 0, minimum=0)
    storage = StorageSettings(
        root=root,
        max_file_size_bytes=env.int("MediaStorage__MaxFileSizeBytes",
                                    DEFAULT_MAX_FILE_SIZE_BYTES, minimum=1),
        max_files_per_request=env.int("MediaStorage__MaxFilesPerRequest",
                                      DEFAULT_MAX_FILES_PER_REQUEST, minimum=1, maximum=1000),
        quota_bytes=quota or None,
        sweep_interval_seconds=env.int("MediaStorage__SweepIntervalSeconds", 3600,
                                       minimum=1),
        temp_max_age_seconds=env.int("MediaStorage__TempMaxAgeSeconds", 3600, minimum=60),
        orphan_grace_seconds=env.int("MediaStorage__OrphanGraceSeconds", 600, minimum=0),
    )
    imports = load_import_settings(env)
    audit_retention = retention_days(env)
    if env.problems:
        raise SettingsError(env.problems)
    return MediaSettings(common=common, storage=storage, imports=imports,
                         audit_retention_days=audit_retention)
