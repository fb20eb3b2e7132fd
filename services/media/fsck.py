"""``python -m services.media fsck [--repair]``: rows against files, sizes and SHA-256.

Exit status: 0 when all was well, 1 when problems were found (repaired with --repair, so
that a second run answers 0 unless a repair failed), 2 for bad settings.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Mapping, Sequence
from typing import TextIO

from services.media import audit, consistency
from services.media.app import MIGRATIONS
from services.media.imports.files import ImportFiles, check_activities
from services.media.settings import SERVICE, MediaSettings, load_settings
from services.media.storage import MediaStorage
from shared.config import SettingsError
from shared.db import create_pool, migrate

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_BAD_SETTINGS = 2


async def run_fsck(settings: MediaSettings, *, repair: bool, out: TextIO) -> int:
    storage = MediaStorage(settings.storage.root)
    await asyncio.get_running_loop().run_in_executor(None, storage.prepare)
    pool = await create_pool(settings.common.database_url.reveal(), schema="media", max_size=2)
    try:
        async with pool.acquire() as connection:
            await migrate(connection, "media", MIGRATIONS)
        report = await consistency.check(
            pool, storage, grace_seconds=settings.storage.orphan_grace_seconds,
            temp_max_age_seconds=settings.storage.temp_max_age_seconds, verify_content=True,
        )
        try:
            if repair:
                await consistency.repair(pool, storage, report)
            activities = await check_activities(
                pool, ImportFiles(storage), grace_seconds=settings.storage.orphan_grace_seconds,
                repair=repair)
        except BaseException:
            if repair:
                with contextlib.suppress(Exception):
                    await audit.record_in_pool(pool, audit.Origin.admin(), audit.FSCK_REPAIR,
                                               audit.FAILURE)
            raise
        if repair:
            await audit.record_in_pool(
                pool, audit.Origin.admin(), audit.FSCK_REPAIR, audit.SUCCESS,
                problemsFound=not (report.all_well and activities.all_well))
    finally:
        await pool.close()
    for line in consistency.summary_lines(report) + activities.lines():
        print(line, file=out)
    return EXIT_OK if report.all_well and activities.all_well else EXIT_PROBLEMS


def main(argv: Sequence[str], environ: Mapping[str, str] | None = None,
         out: TextIO = sys.stdout) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.media fsck",
                                     description="Check stored media files against the database.")
    parser.add_argument("--repair", action="store_true",
                        help="remove orphan files and mark broken rows")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(environ)
    except SettingsError as exc:
        for problem in exc.problems:
            print(f"{SERVICE}: configuration error: {problem}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    return asyncio.run(run_fsck(settings, repair=args.repair, out=out))
