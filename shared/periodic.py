"""A background task that runs one step, sleeps an interval, and repeats until the app stops.

A step handles its own errors: what it lets through ends the schedule, as an unexpected
error should, rather than being retried forever in silence.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable


async def _forever(step: Callable[[], Awaitable[None]], interval: float) -> None:
    while True:
        await step()
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def periodic(name: str, interval: float,
                   step: Callable[[], Awaitable[None]]) -> AsyncIterator[None]:
    """Run ``step`` now and then every ``interval`` seconds while the block runs; for use
    inside an aiohttp cleanup context."""
    task = asyncio.create_task(_forever(step, interval), name=name)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
