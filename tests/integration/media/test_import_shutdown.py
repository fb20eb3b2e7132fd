"""Stopping the media service while an import runs: the stop always finishes, promptly.

The worker is woken whenever a job ends or an import arrives; a wake that lands just as
the service stops must not keep the worker's loop alive (which once held a stop for the
whole test timeout).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from aiohttp import web
from import_support import (
    big_export,
    clean_import_tables,  # noqa: F401 - a fixture, used through pytestmark
    start_import,
    wait_for,
)

from services.media.imports.worker import IMPORT_WORKER

pytestmark = pytest.mark.usefixtures("clean_import_tables")

CYCLES = 20
# Generous: a stop takes well under a second; a hang would take forever.
STOP_WITHIN_SECONDS = 10


def woken_as_it_stops(app: web.Application) -> None:
    """Wake the worker at the last moment before it is stopped, as a job ending or an
    import arriving during the shutdown would."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        yield
        app[IMPORT_WORKER].wake()

    # Cleanup runs in reverse: right after the worker's context means right before its stop.
    position = next(index for index, ctx in enumerate(app.cleanup_ctx)
                    if ctx.__qualname__.startswith("import_worker_context"))
    app.cleanup_ctx.insert(position + 1, context)


async def test_the_app_stops_promptly_twenty_times_with_an_import_in_flight(
        make_api, database_url: str) -> None:
    archive = big_export()
    for _ in range(CYCLES):
        api = await make_api(prepare=woken_as_it_stops)
        import_id = await start_import(api, archive)
        await wait_for(api, import_id, {"processing"}, entriesDone=1)
        async with asyncio.timeout(STOP_WITHIN_SECONDS):
            await api.client.close()
        connection = await asyncpg.connect(database_url)
        try:
            status = await connection.fetchval(
                "SELECT status FROM media.imports WHERE id = $1", uuid.UUID(import_id))
            # Off the queue the stop handed it back to, so that the next start claims
            # only its own import.
            await connection.execute(
                "UPDATE media.imports SET status = 'cancelled' WHERE id = $1",
                uuid.UUID(import_id))
        finally:
            await connection.close()
        assert status == "queued"
