"""The bounded bcrypt pool: correct answers, the dummy check, and refusal when full."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import bcrypt
import pytest

from services.auth.hashing import Hasher
from shared.errors import ServiceUnavailableError


@pytest.fixture
async def hasher() -> AsyncIterator[Hasher]:
    # Cost 4 keeps these fast; the service itself never allows below 10.
    pool = Hasher(4, workers=1, queue_size=1)
    await pool.start()
    try:
        yield pool
    finally:
        pool.close()


async def test_hash_and_verify(hasher: Hasher) -> None:
    stored = await hasher.hash("violet-harbor-tangent-42")
    assert stored.startswith("$2b$04$")
    assert await hasher.verify("violet-harbor-tangent-42", stored)
    assert not await hasher.verify("violet-harbor-tangent-43", stored)


async def test_unknown_user_is_checked_against_a_dummy_and_refused(hasher: Hasher) -> None:
    assert not await hasher.verify("anything-at-all", None)


async def test_over_long_password_never_matches_even_when_its_prefix_would(
        hasher: Hasher) -> None:
    prefix = "p" * 72
    stored = bcrypt.hashpw(prefix.encode(), bcrypt.gensalt(4)).decode()
    assert await hasher.verify(prefix, stored)
    assert not await hasher.verify(prefix + "tail", stored)


async def test_a_stored_value_that_is_not_a_hash_matches_nothing(hasher: Hasher) -> None:
    assert not await hasher.verify("whatever-password", "plain-text-password")


async def test_more_jobs_than_workers_plus_queue_are_refused_with_retry_after() -> None:
    pool = Hasher(12, workers=1, queue_size=1)
    await pool.start()
    try:
        results = await asyncio.gather(*(pool.hash("violet-harbor-tangent-42")
                                         for _ in range(4)), return_exceptions=True)
    finally:
        pool.close()
    refused = [r for r in results if isinstance(r, ServiceUnavailableError)]
    done = [r for r in results if isinstance(r, str)]
    assert len(done) == 2
    assert len(refused) == 2
    assert refused[0].status == 503
    assert int(refused[0].headers["Retry-After"]) >= 1
    assert pool.in_flight == 0


async def test_verify_before_start_is_an_error() -> None:
    pool = Hasher(4, workers=1, queue_size=0)
    try:
        with pytest.raises(RuntimeError):
            await pool.verify("x", None)
    finally:
        pool.close()
