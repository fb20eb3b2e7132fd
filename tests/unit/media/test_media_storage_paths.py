"""Stored paths are built only from generated ids and never leave the storage root."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from services.media.storage import MediaStorage, StoragePathError


@pytest.fixture
def storage(tmp_path: Path) -> MediaStorage:
    storage = MediaStorage(tmp_path / "root")
    storage.prepare()
    return storage


def test_path_is_root_owner_media(storage):
    owner, media = uuid.uuid4(), uuid.uuid4()
    assert storage.path_for(owner, media) == storage.root / str(owner) / str(media)


@pytest.mark.parametrize(("owner", "media"), [
    ("../../etc", uuid.uuid4()), (uuid.uuid4(), "../passwd"), (str(uuid.uuid4()), uuid.uuid4()),
])
def test_anything_but_uuids_is_refused(storage, owner, media):
    with pytest.raises(StoragePathError):
        storage.path_for(owner, media)


def test_relative_root_is_refused():
    with pytest.raises(StoragePathError):
        MediaStorage(Path("relative"))


async def test_removing_outside_the_root_is_refused(storage, tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    for path in (victim, storage.root / ".." / "victim", storage.root):
        with pytest.raises(StoragePathError):
            await storage.remove_path(path)
    assert victim.read_bytes() == b"keep"


def test_prepare_makes_private_directories(storage):
    assert storage.root.stat().st_mode & 0o777 == 0o700
    assert storage.temp_dir.stat().st_mode & 0o777 == 0o700
