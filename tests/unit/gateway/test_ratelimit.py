"""Token-bucket arithmetic with an injected clock."""

from __future__ import annotations

import pytest

from services.gateway.limiter import MemoryLimiter
from services.gateway.ratelimit import Bucket, Policy, take

GLOBAL = Policy("global", rate=1.0, burst=3)
STRICT = Policy.per_minute("auth", 6, 2)


def test_a_new_client_has_a_full_bucket_and_spends_one_token_per_request() -> None:
    decision, (bucket,) = take([None], [GLOBAL], now=100.0)
    assert decision.allowed
    assert decision.remaining == 2
    assert bucket == Bucket(2.0, 100.0)


def test_burst_then_refusal_with_the_exact_wait() -> None:
    buckets = [None]
    for _ in range(3):
        decision, buckets = take(buckets, [GLOBAL], now=10.0)
        assert decision.allowed
    decision, after = take(buckets, [GLOBAL], now=10.25)
    assert not decision.allowed
    assert decision.retry_after == pytest.approx(0.75)
    assert decision.retry_after_seconds == 1
    assert decision.remaining == 0
    # A refusal costs nothing: the level only refilled.
    assert after[0].tokens == pytest.approx(0.25)


def test_refill_is_linear_and_capped_at_the_burst() -> None:
    decision, (bucket,) = take([Bucket(0.0, 0.0)], [GLOBAL], now=2.5)
    assert decision.allowed
    assert bucket.tokens == pytest.approx(1.5)
    decision, (bucket,) = take([Bucket(0.0, 0.0)], [GLOBAL], now=1_000.0)
    assert bucket.tokens == pytest.approx(2.0)


def test_a_clock_going_backwards_grants_nothing() -> None:
    decision, (bucket,) = take([Bucket(0.5, 50.0)], [GLOBAL], now=40.0)
    assert not decision.allowed
    assert bucket.tokens == pytest.approx(0.5)


def test_several_buckets_take_only_when_all_have_a_token() -> None:
    buckets = [Bucket(3.0, 0.0), Bucket(0.5, 0.0)]
    decision, after = take(buckets, [GLOBAL, STRICT], now=0.0)
    assert not decision.allowed
    assert decision.policy is STRICT
    assert decision.retry_after == pytest.approx(0.5 / STRICT.rate)
    assert after[0].tokens == pytest.approx(3.0)  # the global budget is untouched
    decision, after = take([Bucket(3.0, 0.0), Bucket(1.5, 0.0)], [GLOBAL, STRICT], now=0.0)
    assert decision.allowed
    assert [b.tokens for b in after] == [pytest.approx(2.0), pytest.approx(0.5)]
    assert decision.policy is STRICT  # the tighter bucket speaks for the headers


def test_policy_window_and_per_minute() -> None:
    assert STRICT.rate == pytest.approx(0.1)
    assert STRICT.window_seconds == 20
    assert Policy("x", rate=1000.0, burst=1).window_seconds == 1


def test_take_refuses_mismatched_inputs() -> None:
    with pytest.raises(ValueError, match="one bucket per policy"):
        take([], [], now=0.0)
    with pytest.raises(ValueError, match="one bucket per policy"):
        take([None, None], [GLOBAL], now=0.0)


def test_memory_limiter_keeps_clients_apart_and_forgets_the_least_recent() -> None:
    now = [0.0]
    limiter = MemoryLimiter(max_clients=2, clock=lambda: now[0])
    policy = [Policy("p", rate=0.001, burst=1)]
    assert limiter.check_now("a", policy).allowed
    assert not limiter.check_now("a", policy).allowed
    assert limiter.check_now("b", policy).allowed
    assert limiter.check_now("c", policy).allowed  # "a" is evicted
    assert len(limiter) == 2
    assert limiter.check_now("a", policy).allowed


def test_memory_limiter_keeps_a_client_it_has_just_seen() -> None:
    limiter = MemoryLimiter(max_clients=2, clock=lambda: 0.0)
    policy = [Policy("p", rate=0.001, burst=1)]
    assert limiter.check_now("a", policy).allowed
    assert limiter.check_now("b", policy).allowed
    assert not limiter.check_now("a", policy).allowed  # seen again: now the most recent
    assert limiter.check_now("c", policy).allowed  # so "b" is the one forgotten
    assert not limiter.check_now("a", policy).allowed
    assert limiter.check_now("b", policy).allowed


def test_the_first_of_equally_full_buckets_speaks_for_the_decision() -> None:
    decision, _ = take([Bucket(2.0, 0.0), Bucket(2.5, 0.0)], [GLOBAL, STRICT], now=0.0)
    assert decision.allowed
    assert decision.policy is GLOBAL
    assert decision.remaining == 1
