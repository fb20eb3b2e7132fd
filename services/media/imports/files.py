"""Where imports keep their files under the storage root.

    <root>/.imports/<owner id>/<import id>.zip     an uploaded archive awaiting processing
    <root>/.activities/<owner id>/<activity id>    an imported activity file

Both are built only from ids this service generated. The media layout's consistency
checks leave dot-folders alone; activity files have their own check (``check_files``).
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from uuid import UUID

import asyncpg

from services.media.imports import store as db
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


def _rename_all_into(moves: list[tuple[Path, Path]]) -> None:
    # One directory fsync per folder for the whole batch rather than one per file: the
    # renames only have to be durable before the rows that name them commit.
    folders: dict[Path, None] = {}
    for temp, final in moves:
        if final.parent not in folders:
            final.parent.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
            folders[final.parent] = None
        os.rename(temp, final)
    for folder in folders:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _unlink_all_quietly(paths: list[Path]) -> None:
    for path in paths:
        _unlink_quietly(path)


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

    async def place_all(self, moves: list[tuple[Received, Path]]) -> None:
        """``place`` for several files with one directory fsync; all undone on failure."""
        if not moves:
            return
        loop = asyncio.get_running_loop()
        try:
            await settled(loop.run_in_executor(
                None, _rename_all_into, [(received.path, final) for received, final in moves]))
        except BaseException:
            await settled(loop.run_in_executor(
                None, _unlink_all_quietly, [final for _, final in moves]))
            raise
        for received, _ in moves:
            received.placed = True

    async def remove_all(self, paths: list[Path]) -> None:
        loop = asyncio.get_running_loop()
        await settled(loop.run_in_executor(None, _unlink_all_quietly, paths))

    async def remove(self, path: Path) -> bool:
        loop = asyncio.get_running_loop()
        return await settled(loop.run_in_executor(None, _unlink_quietly, path))

    def scan_area(self, folder: str, suffix: str = "") -> tuple[dict[tuple[UUID, UUID], Path],
                                                                list[Path]]:
        """Files of ``<root>/<folder>/<owner>/<id><suffix>`` by (owner, id), and anything
        else found there (blocking)."""
        found: dict[tuple[UUID, UUID], Path] = {}
        strays: list[Path] = []
        base = self.root / folder
        if not base.is_dir():
            return found, strays
        for owner_dir in base.iterdir():
            owner_id = _uuid_name(owner_dir.name)
            if owner_id is None or owner_dir.is_symlink() or not owner_dir.is_dir():
                strays.append(owner_dir)
                continue
            for path in owner_dir.iterdir():
                name = path.name.removesuffix(suffix) if path.name.endswith(suffix) else ""
                item_id = _uuid_name(name)
                if item_id is None or path.is_symlink() or not path.is_file():
                    strays.append(path)
                else:
                    found[(owner_id, item_id)] = path
        return found, strays


def _uuid_name(name: str) -> UUID | None:
    try:
        value = UUID(name)
    except ValueError:
        return None
    return value if str(value) == name else None


@dataclass(slots=True)
class ActivityReport:
    rows_checked: int = 0
    files_checked: int = 0
    # (activity id, reason) of rows whose file is missing or differs from the row.
    broken_rows: list[tuple[UUID, str]] = field(default_factory=list)
    # Files with no row (activity files, or archives of imports that no longer exist).
    orphan_files: list[Path] = field(default_factory=list)
    # Entries not named like anything this service writes there: listed, never removed,
    # and not counted as a problem (an operator may keep notes or copies there).
    other_entries: list[Path] = field(default_factory=list)
    repaired: bool = False

    @property
    def all_well(self) -> bool:
        return not (self.broken_rows or self.orphan_files)

    def lines(self) -> list[str]:
        removed = " (removed)" if self.repaired and self.orphan_files else ""
        marked = " (marked broken)" if self.repaired and self.broken_rows else ""
        lines = [f"activity rows checked: {self.rows_checked}",
                 f"activity and import files checked: {self.files_checked}",
                 f"activity rows broken: {len(self.broken_rows)}{marked}"]
        lines += [f"  {activity_id}: {reason}" for activity_id, reason in self.broken_rows]
        lines.append(f"activity or import files without rows: {len(self.orphan_files)}"
                     f"{removed}")
        lines += [f"  {path}" for path in self.orphan_files]
        lines.append(f"other entries in the import areas (left alone): "
                     f"{len(self.other_entries)}")
        lines += [f"  {path}" for path in self.other_entries]
        lines.append("activity files: all well" if self.all_well
                     else "activity files: problems found")
        return lines


async def check_activities(pool: asyncpg.Pool, files: ImportFiles, *, grace_seconds: float,
                           repair: bool, now: float | None = None) -> ActivityReport:
    """Activity rows against their files, and archives against their imports.

    As for media, rows are read before the disk is scanned and young files are not
    called orphans, so an import placing a file right now is not disturbed.
    """
    now = time.time() if now is None else now
    loop = asyncio.get_running_loop()
    report = ActivityReport()
    async with pool.acquire() as connection:
        rows = await db.select_all_activity_files(connection)
        imports = await db.select_import_keys(connection)
    on_disk, strays = await loop.run_in_executor(None, files.scan_area, ACTIVITIES_DIR)
    archives, archive_strays = await loop.run_in_executor(None, files.scan_area, IMPORTS_DIR,
                                                          ".zip")
    report.rows_checked = len(rows)
    report.files_checked = len(on_disk) + len(archives)
    report.other_entries = [*strays, *archive_strays]
    for owner_id, activity_id, size, sha256 in rows:
        path = on_disk.pop((owner_id, activity_id), None)
        if path is None:
            report.broken_rows.append((activity_id, "missing_file"))
        elif (await loop.run_in_executor(None, os.path.getsize, path)) != size:
            report.broken_rows.append((activity_id, "size_mismatch"))
        elif await loop.run_in_executor(None, file_sha256, path) != sha256:
            report.broken_rows.append((activity_id, "sha256_mismatch"))
    candidates = list(on_disk.items()) + [item for item in archives.items()
                                          if item[0] not in imports]
    async with pool.acquire() as connection:
        for (owner_id, item_id), path in candidates:
            if now - path.stat().st_mtime <= grace_seconds:
                continue
            if not await db.activity_or_import_exists(connection, owner_id, item_id):
                report.orphan_files.append(path)
    if repair:
        for path in report.orphan_files:
            await files.remove(path)
        async with pool.acquire() as connection:
            for activity_id, reason in report.broken_rows:
                await db.mark_activity_broken(connection, activity_id, reason)
        report.repaired = True
    return report

