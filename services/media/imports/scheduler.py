"""Running an import's items a few at once while keeping the order that matters."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

ITEM_CONCURRENCY = 8


async def each(items: list[Any], handle: Any, keys: Any = lambda _item: (), *,
               stopping: Callable[[], bool] = lambda: False,
               concurrency: int = ITEM_CONCURRENCY) -> None:
    """``handle`` every item, a few at once: each item waits mostly on fsync and the
    database, so overlapping them is what makes an import keep up with the disk.

    Items sharing a key (the same activity id, the same bytes) are still handled in
    list order, so that which copy is stored and which is a duplicate is exactly what
    handling them one by one would give.
    """
    loop = asyncio.get_running_loop()
    pending = iter(items)
    last: dict[Any, asyncio.Future[None]] = {}

    async def work() -> None:
        for item in pending:
            if stopping():
                return
            earlier = []
            mine = []
            for key in set(keys(item)):
                previous = last.get(key)
                if previous is not None and not previous.done():
                    earlier.append(previous)
                last[key] = loop.create_future()
                mine.append(last[key])
            try:
                for future in earlier:
                    await asyncio.shield(future)
                await handle(item)
            finally:
                for future in mine:
                    if not future.done():
                        future.set_result(None)

    tasks = [asyncio.create_task(work()) for _ in range(concurrency)]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
