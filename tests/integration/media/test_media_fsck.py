"""The sweeper and ``fsck``: every kind of orphan is found; repairs remove orphan files,
mark broken rows, and never touch what is consistent."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import time
import uuid

import pytest
from media_samples import jpeg, png
from prometheus_client import REGISTRY

from services.media.fsck import run_fsck
from services.media.settings import load_settings
from services.media.sweeper import SWEEP_STATE, sweep
from shared.keys import DB_POOL
from tests.support import ROOT

AN_HOUR_AGO = time.time() - 2 * 3600


@pytest.fixture
async def api(make_api):
    """The app on a media table emptied first: fsck looks at every row there is. The
    start-up sweep has finished, so it cannot race the files the tests plant."""
    api = await make_api()
    await asyncio.wait_for(api.app[SWEEP_STATE].finished.wait(), 10)
    async with api.app[DB_POOL].acquire() as connection:
        await connection.execute("TRUNCATE media.media CASCADE")
    return api


async def fsck(media_env, repair: bool = False) -> tuple[int, str]:
    out = io.StringIO()
    status = await run_fsck(load_settings(media_env), repair=repair, out=out)
    return status, out.getvalue()


def aged(path, when: float = AN_HOUR_AGO):
    os.utime(path, (when, when))
    return path


async def test_fsck_on_a_consistent_store_is_all_well(api, media_env):
    await api.upload_ok("a.jpg", jpeg())
    await api.upload_ok("b.png", png())
    status, out = await fsck(media_env)
    assert status == 0, out
    assert "rows checked: 2" in out
    assert "files checked: 2" in out
    assert out.strip().endswith("all well")


async def test_file_without_row_is_found_and_removed_by_repair(api, media_env):
    keep = await api.upload_ok("keep.jpg", jpeg())
    orphan = api.root / api.user_id / str(uuid.uuid4())
    orphan.write_bytes(b"left over")
    aged(orphan)
    status, out = await fsck(media_env)
    assert status == 1
    assert "files without rows: 1" in out
    assert str(orphan) in out
    assert orphan.exists()

    status, out = await fsck(media_env, repair=True)
    assert status == 1
    assert "files without rows: 1 (removed)" in out
    assert not orphan.exists()
    assert (api.root / api.user_id / keep["id"]).exists()
    assert (await fsck(media_env))[0] == 0


async def test_stray_files_with_unexpected_names_are_orphans(api, media_env):
    await api.upload_ok("keep.jpg", jpeg())
    strays = [api.root / "notes.txt", api.root / api.user_id / "evil.html",
              api.root / str(uuid.uuid4()).upper()]
    for path in strays:
        path.write_bytes(b"x")
        aged(path)
    status, out = await fsck(media_env, repair=True)
    assert status == 1
    assert "files without rows: 3 (removed)" in out
    assert not any(path.exists() for path in strays)
    assert (await fsck(media_env))[0] == 0


async def test_unexpected_directory_is_reported_and_never_removed(api, media_env):
    folder = api.root / "not-an-owner"
    folder.mkdir()
    (folder / "inside.jpg").write_bytes(jpeg())
    status, out = await fsck(media_env, repair=True)
    assert status == 1
    assert "unexpected entries (not removed): 1" in out
    assert (folder / "inside.jpg").exists()


async def test_other_features_dot_directories_are_left_alone(api, media_env):
    other = api.root / ".another-feature" / api.user_id
    other.mkdir(parents=True)
    (other / "a.zip").write_bytes(b"PK")
    aged(other / "a.zip")
    status, out = await fsck(media_env, repair=True)
    assert status == 0, out
    assert (other / "a.zip").exists()


async def test_young_file_without_row_is_not_called_an_orphan(api, media_env):
    fresh = api.root / api.user_id
    fresh.mkdir(parents=True, exist_ok=True)
    in_flight = fresh / str(uuid.uuid4())
    in_flight.write_bytes(b"being committed right now")
    status, out = await fsck(media_env, repair=True)
    assert status == 0, out
    assert in_flight.exists()


async def test_row_without_file_is_marked_broken_by_repair(api, media_env):
    item = await api.upload_ok("gone.jpg", jpeg())
    (api.root / api.user_id / item["id"]).unlink()
    status, out = await fsck(media_env)
    assert status == 1
    assert f"{item['id']} owner {api.user_id}: missing_file" in out
    assert "broken" not in await (await api.get(f"/media/{item['id']}")).json()

    status, out = await fsck(media_env, repair=True)
    assert status == 1
    assert "broken rows: 1 (marked broken)" in out
    body = await (await api.get(f"/media/{item['id']}")).json()
    assert body["broken"] is True
    assert (await api.get(f"/media/{item['id']}/content")).status == 404

    status, out = await fsck(media_env)
    assert status == 0, out
    assert "rows already marked broken: 1" in out
    # The owner can still delete what is left of it.
    assert (await api.delete(f"/media/{item['id']}")).status == 204


@pytest.mark.parametrize(("damage", "reason"), [
    (lambda data: data + b"tail", "size_mismatch"),
    (lambda data: data[:-1], "size_mismatch"),
    (lambda data: data[:100] + bytes([data[100] ^ 0xFF]) + data[101:], "sha256_mismatch"),
])
async def test_damaged_file_is_found_and_its_row_marked(api, media_env, damage, reason):
    item = await api.upload_ok("damaged.jpg", jpeg((32, 32)))
    path = api.root / api.user_id / item["id"]
    path.write_bytes(damage(path.read_bytes()))
    status, out = await fsck(media_env, repair=True)
    assert status == 1
    assert f"{item['id']} owner {api.user_id}: {reason}" in out
    assert path.exists(), "a damaged file is evidence; it is kept"
    body = await (await api.get(f"/media/{item['id']}")).json()
    assert body["broken"] is True


async def test_restored_file_unmarks_its_row(api, media_env):
    item = await api.upload_ok("back.jpg", jpeg())
    path = api.root / api.user_id / item["id"]
    data = path.read_bytes()
    path.unlink()
    await fsck(media_env, repair=True)
    path.write_bytes(data)
    status, out = await fsck(media_env, repair=True)
    assert status == 0, out
    assert "rows whole again: 1 (unmarked)" in out
    assert "broken" not in await (await api.get(f"/media/{item['id']}")).json()


async def test_stale_temporary_file_is_found_and_removed(api, media_env):
    stale = api.root / ".tmp" / "abandoned.part"
    stale.write_bytes(b"half an upload")
    aged(stale)
    young = api.root / ".tmp" / "in-progress.part"
    young.write_bytes(b"still arriving")
    status, out = await fsck(media_env, repair=True)
    assert status == 1
    assert "stale temporary files: 1 (removed)" in out
    assert not stale.exists()
    assert young.exists()


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "services.media", "fsck", *args],
                          env={"PATH": os.environ.get("PATH", ""), **env}, cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)


async def test_fsck_command_exit_status_says_whether_all_was_well(api, media_env):
    await api.upload_ok("a.jpg", jpeg())
    orphan = api.root / api.user_id / str(uuid.uuid4())
    orphan.write_bytes(b"x")
    aged(orphan)
    first = await asyncio.to_thread(run_cli, media_env)
    assert first.returncode == 1, first.stderr
    assert "problems found" in first.stdout
    repaired = await asyncio.to_thread(run_cli, media_env, "--repair")
    assert repaired.returncode == 1
    assert not orphan.exists()
    clean = await asyncio.to_thread(run_cli, media_env)
    assert clean.returncode == 0, clean.stdout
    assert "all well" in clean.stdout


async def test_fsck_command_with_bad_settings_exits_2(media_env):
    env = {**media_env, "MediaStorage__RootPath": "relative/path"}
    result = await asyncio.to_thread(run_cli, env)
    assert result.returncode == 2
    assert "MediaStorage__RootPath: must be an absolute path" in result.stderr


# --- the sweeper ---------------------------------------------------------------------

async def test_sweeper_removes_stale_temps_and_only_reports_orphans(api):
    item = await api.upload_ok("a.jpg", jpeg())
    stale = api.root / ".tmp" / "old.part"
    stale.write_bytes(b"x")
    aged(stale)
    orphan = api.root / api.user_id / str(uuid.uuid4())
    orphan.write_bytes(b"x")
    aged(orphan)
    gone = await api.upload_ok("b.png", png())
    (api.root / api.user_id / gone["id"]).unlink()

    report = await sweep(api.app)
    assert not stale.exists()
    assert orphan.exists(), "the sweeper reports orphans, it does not delete them"
    assert report.orphan_files == [orphan]
    assert [str(b.item.id) for b in report.broken_rows] == [gone["id"]]
    assert (api.root / api.user_id / item["id"]).exists()
    assert REGISTRY.get_sample_value("tempo_media_orphan_files") == 1
    assert REGISTRY.get_sample_value("tempo_media_broken_rows") == 1
    async with api.app[DB_POOL].acquire() as connection:
        assert await connection.fetchval("SELECT count(*) FROM media.media") == 2


async def test_sweeper_runs_when_the_service_starts(make_api, storage_root):
    (storage_root / ".tmp").mkdir(parents=True)
    stale = storage_root / ".tmp" / "from-before-a-crash.part"
    stale.write_bytes(b"x")
    aged(stale)
    api = await make_api()
    await asyncio.wait_for(api.app[SWEEP_STATE].finished.wait(), 10)
    assert not stale.exists()
    assert api.app[SWEEP_STATE].last.stale_temps == [api.root / ".tmp" / stale.name]
