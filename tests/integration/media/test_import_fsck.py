"""fsck covers imported activity files and uploaded archives as it covers media."""

from __future__ import annotations

import io
import os
import time
import uuid

import pytest
from import_support import (
    clean_import_tables,  # noqa: F401 - a fixture, used through pytestmark
    import_done,
    realistic_export,
    rows,
)

from services.media.fsck import run_fsck
from services.media.settings import load_settings
from shared.keys import DB_POOL

pytestmark = pytest.mark.usefixtures("clean_import_tables")

AN_HOUR_AGO = time.time() - 2 * 3600


async def fsck(media_env, repair: bool = False) -> tuple[int, str]:
    out = io.StringIO()
    status = await run_fsck(load_settings(media_env), repair=repair, out=out)
    return status, out.getvalue()


def aged(path):
    os.utime(path, (AN_HOUR_AGO, AN_HOUR_AGO))
    return path


@pytest.fixture
async def api(make_api):
    api = await make_api()
    async with api.app[DB_POOL].acquire() as connection:
        await connection.execute("TRUNCATE media.media, media.activities, media.imports CASCADE")
    return api


async def test_fsck_checks_activity_files_and_archives(api, media_env) -> None:
    await import_done(api, realistic_export())
    status, out = await fsck(media_env)
    assert status == 0, out
    assert "activity rows checked: 2" in out
    assert out.strip().endswith("activity files: all well")

    by_id = {r["strava_id"]: r for r in await rows(api, "activities")}
    area = api.root / ".activities" / api.user_id
    (area / str(by_id["101"]["id"])).unlink()
    with (area / str(by_id["103"]["id"])).open("ab") as handle:
        handle.write(b"!")
    orphan = area / str(uuid.uuid4())
    orphan.write_bytes(b"left over")
    aged(orphan)
    young = area / str(uuid.uuid4())
    young.write_bytes(b"being placed right now")
    archives = api.root / ".imports" / api.user_id
    archives.mkdir(parents=True, exist_ok=True)
    stale_archive = archives / f"{uuid.uuid4()}.zip"
    stale_archive.write_bytes(b"PK")
    aged(stale_archive)
    stray = area / "not-an-id"
    stray.write_bytes(b"?")

    status, out = await fsck(media_env)
    assert status == 1, out
    assert f"{by_id['101']['id']}: missing_file" in out
    assert f"{by_id['103']['id']}: size_mismatch" in out
    assert str(orphan) in out
    assert str(stale_archive) in out
    assert str(young) not in out
    assert str(stray) in out.split("other entries")[1]
    assert orphan.exists()

    status, out = await fsck(media_env, repair=True)
    assert status == 1
    assert not orphan.exists()
    assert not stale_archive.exists()
    assert young.exists()
    assert stray.exists()
    broken = {r["strava_id"]: r["broken_reason"] for r in await rows(api, "activities")}
    assert broken == {"101": "missing_file", "103": "size_mismatch", "106": None}

    status, out = await fsck(media_env)
    assert status == 0, out
    assert str(stray) in out
