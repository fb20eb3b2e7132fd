"""Where imports keep their files under the storage root.

    <root>/.imports/<owner id>/<import id>.zip     an uploaded archive awaiting processing
    <root>/.activities/<owner id>/<activity id>    an imported activity file

Both are built only from ids this service generated. The media layout's consistency
checks leave dot-folders alone; activity files have their own check (``check_files``).
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

from services.media.storage import MediaStorage, Received, StoragePathError, file_sha256, settled

IMPORTS_DIR = ".imports"
ACTIVITIES_DIR = ".activities"
_DIR_MODE = 0o700


def _unlink_quietly(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def _rename_into(temp: Path, final: Path) -> None:
    final.parent.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
    os.rename(temp, final)
    fd = os.open(final.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ImportFiles:
    def __init__(self, storage: MediaStorage) -> None:
        self.storage = storage

    @property
    def root(self) -> Path:
        return self.storage.root

    def _inside(self, folder: str, owner_id: UUID, name: str) -> Path:
        if not isinstance(owner_id, UUID):
            raise StoragePathError("stored paths are built only from UUIDs")
        path = self.root / folder / str(owner_id) / name
        if Path(os.path.normpath(path)).parent.parent.parent != self.root:
            raise StoragePathError("stored path leaves the storage root")
        return path

    def archive_path(self, owner_id: UUID, import_id: UUID) -> Path:
        if not isinstance(import_id, UUID):
            raise StoragePathError("stored paths are built only from UUIDs")
        return self._inside(IMPORTS_DIR, owner_id, f"{import_id}.zip")

    def activity_path(self, owner_id: UUID, activity_id: UUID) -> Path:
        if not isinstance(activity_id, UUID):
            raise StoragePathError("stored paths are built only from UUIDs")
        return self._inside(ACTIVITIES_DIR, owner_id, str(activity_id))

    async def place(self, received: Received, final: Path) -> None:
        """Rename a received temporary file into place, durably; undone on failure."""
        loop = asyncio.get_running_loop()
        try:
            await settled(loop.run_in_executor(None, _rename_into, received.path, final))
        except BaseException:
            await settled(loop.run_in_executor(None, _unlink_quietly, final))
            raise
        received.placed = True

    async def remove(self, path: Path) -> bool:
        loop = asyncio.get_running_loop()
        return await settled(loop.run_in_executor(None, _unlink_quietly, path))

    def list_activity_files(self) -> dict[tuple[UUID, UUID], Path]:
        """Every file in the activities area keyed by (owner, activity) (blocking)."""
        found: dict[tuple[UUID, UUID], Path] = {}
        base = self.root / ACTIVITIES_DIR
        if not base.is_dir():
            return found
        for owner_dir in base.iterdir():
            for path in owner_dir.iterdir() if owner_dir.is_dir() else [owner_dir]:
                try:
                    key = (UUID(owner_dir.name), UUID(path.name))
                except ValueError:
                    key = None
                if key is None or str(key[0]) != owner_dir.name or str(key[1]) != path.name:
                    found[(UUID(int=0), UUID(int=len(found)))] = path
                else:
                    found[key] = path
        return found


@dataclass(frozen=True, slots=True)
class FileProblem:
    path: str
    problem: str


def check_activity_files(files: ImportFiles, rows: list[tuple[UUID, UUID, int, str]]
                         ) -> list[FileProblem]:
    """Every activity row has its file with the recorded size and SHA-256, and every file
    in the activities area has a row (blocking)."""
    on_disk = files.list_activity_files()
    problems: list[FileProblem] = []
    for owner_id, activity_id, size, sha256 in rows:
        path = on_disk.pop((owner_id, activity_id), None)
        if path is None:
            problems.append(FileProblem(str(files.activity_path(owner_id, activity_id)),
                                        "missing file"))
            continue
        if path.stat().st_size != size:
            problems.append(FileProblem(str(path), "size differs from the row"))
        elif file_sha256(path) != sha256:
            problems.append(FileProblem(str(path), "SHA-256 differs from the row"))
    problems.extend(FileProblem(str(path), "file without a row") for path in on_disk.values())
    return problems
