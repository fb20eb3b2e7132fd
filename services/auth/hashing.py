"""bcrypt off the event loop, in a bounded pool that refuses work rather than queue forever.

bcrypt releases the GIL while it works, so a thread pool keeps the loop answering. The
pool admits at most ``workers + queue_size`` jobs at once; past that a caller gets
``ServiceUnavailableError`` (503 with Retry-After) at once, so a burst of logins cannot
build an unbounded backlog of memory and latency.
"""

from __future__ import annotations

import asyncio
import math
import secrets
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import bcrypt

from services.auth import metrics
from services.auth.domain import bcrypt_cost_of
from shared.errors import ServiceUnavailableError

T = TypeVar("T")


class Hasher:
    """Hashes and checks passwords with one bcrypt cost, ``workers`` at a time."""

    def __init__(self, cost: int, *, workers: int, queue_size: int) -> None:
        self.cost = cost
        self.workers = workers
        self.capacity = workers + queue_size
        self.in_flight = 0
        self._executor = ThreadPoolExecutor(max_workers=workers,
                                            thread_name_prefix="bcrypt")
        # Dummy hashes by cost: an unknown username is checked at the cost of the stored
        # hash, which may differ from the configured one until the owner logs in again.
        self._dummies: dict[int, bytes] = {}
        # A rough cost of one job, measured, so Retry-After says something useful.
        self._job_seconds = 0.25

    async def start(self, costs: Iterable[int] = ()) -> None:
        """Prepare the hashes that unknown usernames are checked against, at the configured
        cost and at ``costs`` (those of the stored hashes), so that no login pays for
        making one."""
        for cost in {self.cost, *costs}:
            await self._dummy(cost)

    async def _dummy(self, cost: int) -> bytes:
        dummy = self._dummies.get(cost)
        if dummy is None:
            filler = secrets.token_urlsafe(24).encode()
            salt = bcrypt.gensalt(cost)
            dummy = await self._run(lambda: bcrypt.hashpw(filler, salt))
            self._dummies[cost] = dummy
        return dummy

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    def retry_after(self) -> int:
        return max(1, math.ceil(self._job_seconds * self.capacity / self.workers))

    async def _run(self, job: Callable[[], T]) -> T:
        if self.in_flight >= self.capacity:
            metrics.HASH_REJECTIONS.inc()
            raise ServiceUnavailableError(
                "The service is busy checking passwords. Try again shortly.",
                retry_after=self.retry_after(), code="hash_queue_full")
        self.in_flight += 1
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            result = await loop.run_in_executor(self._executor, job)
        finally:
            self.in_flight -= 1
        # Queueing time counts too: it is what a retrying client will see.
        self._job_seconds = 0.8 * self._job_seconds + 0.2 * (loop.time() - started)
        return result

    async def hash(self, password: str) -> str:
        encoded = password.encode("utf-8")
        salt = bcrypt.gensalt(self.cost)
        hashed = await self._run(lambda: bcrypt.hashpw(encoded, salt))
        return hashed.decode("ascii")

    async def verify(self, password: str, password_hash: str | None, *,
                     dummy_cost: int | None = None) -> bool:
        """Check ``password``; with no hash, spend the same work on a dummy and say no.

        The dummy is made at ``dummy_cost`` (the stored hash's, see ``domain.dummy_cost``),
        the configured cost when not given. A password over bcrypt's 72 bytes cannot match
        a stored hash (the policy never let one in), and is never cut short: it is refused
        after the same amount of work as checking that hash would take.
        """
        encoded = password.encode("utf-8")
        fits = len(encoded) <= 72
        if password_hash is None or not fits:
            if password_hash is not None:
                dummy_cost = bcrypt_cost_of(password_hash)
            if not self._dummies:
                raise RuntimeError("Hasher.start() was not awaited")
            dummy = await self._dummy(dummy_cost or self.cost)
            candidate = encoded if fits else bytes(72)
            await self._run(lambda: bcrypt.checkpw(candidate, dummy))
            return False
        stored = password_hash.encode("ascii")
        try:
            return await self._run(lambda: bcrypt.checkpw(encoded, stored))
        except ValueError:
            # A stored value that is not a bcrypt hash matches nothing.
            return False
