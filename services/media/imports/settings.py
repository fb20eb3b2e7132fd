"""The ``Import__*`` settings of the media service: bulk import bounds and the worker."""

from __future__ import annotations

from dataclasses import dataclass

from services.media.imports.archive import ArchiveLimits
from shared.config import Env

DEFAULT_MAX_FILE_SIZE_BYTES = 500_000_000
DEFAULT_MAX_ENTRIES = 100_000
DEFAULT_MAX_UNCOMPRESSED_BYTES = 5_000_000_000
DEFAULT_MAX_COMPRESSION_RATIO = 200.0


@dataclass(frozen=True, slots=True)
class ImportSettings:
    max_file_size_bytes: int = DEFAULT_MAX_FILE_SIZE_BYTES
    max_entries: int = DEFAULT_MAX_ENTRIES
    max_uncompressed_bytes: int = DEFAULT_MAX_UNCOMPRESSED_BYTES
    max_compression_ratio: float = DEFAULT_MAX_COMPRESSION_RATIO
    activity_types: tuple[str, ...] = ("Run",)
    keep_archive: bool = False
    # Imports processed at once by this process (each user still gets one at a time).
    workers: int = 2
    # Queued or running imports one user may have; bounds the disk an account can fill.
    max_active_per_user: int = 3
    # A running import whose heartbeat is older than this is taken to be orphaned by a
    # crashed process and is resumed.
    stale_after_seconds: float = 30.0
    # Processing attempts before an import that keeps being interrupted is failed.
    max_attempts: int = 3
    # How often an idle worker looks for queued imports and crashed ones to resume (it is
    # also woken at once by an import queued in this process).
    poll_interval_seconds: float = 2.0
    # How often a running job saves its progress and heartbeat.
    progress_interval_seconds: float = 0.5

    @property
    def limits(self) -> ArchiveLimits:
        return ArchiveLimits(max_entries=self.max_entries,
                             max_uncompressed_bytes=self.max_uncompressed_bytes,
                             max_ratio=self.max_compression_ratio)

    def counts_as_run(self, activity_type: str) -> bool:
        wanted = {kind.casefold() for kind in self.activity_types}
        return activity_type.casefold() in wanted


def load_import_settings(env: Env) -> ImportSettings:
    """Read ``Import__*``; problems go to ``env.problems`` like every other setting."""
    types = env.list("Import__ActivityTypes", ("Run",))
    if not types:
        env.problem("Import__ActivityTypes", "must name at least one activity type")
        types = ("Run",)
    return ImportSettings(
        max_file_size_bytes=env.int("Import__MaxFileSizeBytes", DEFAULT_MAX_FILE_SIZE_BYTES,
                                    minimum=1),
        max_entries=env.int("Import__MaxEntries", DEFAULT_MAX_ENTRIES, minimum=1),
        max_uncompressed_bytes=env.int("Import__MaxUncompressedBytes",
                                       DEFAULT_MAX_UNCOMPRESSED_BYTES, minimum=1),
        max_compression_ratio=env.float("Import__MaxCompressionRatio",
                                        DEFAULT_MAX_COMPRESSION_RATIO, minimum=1.0),
        activity_types=types,
        keep_archive=env.bool("Import__KeepArchive", False),
        workers=env.int("Import__Workers", 2, minimum=1, maximum=32),
        max_active_per_user=env.int("Import__MaxActivePerUser", 3, minimum=1, maximum=100),
        stale_after_seconds=env.float("Import__StaleAfterSeconds", 30.0, minimum=1.0),
        max_attempts=env.int("Import__MaxAttempts", 3, minimum=1, maximum=100),
        poll_interval_seconds=env.float("Import__PollIntervalSeconds", 2.0, minimum=0.01),
        progress_interval_seconds=env.float("Import__ProgressIntervalSeconds", 0.5,
                                            minimum=0.01),
    )
