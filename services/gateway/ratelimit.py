"""Token-bucket arithmetic: pure functions of the stored state, the policy and ``now``.

A bucket holds at most ``burst`` tokens and refills at ``rate`` tokens per second. A
request takes one token from every bucket that applies to it, and only if each of them has
one: a refused request costs nothing, so a client that keeps hammering does not dig itself
a deeper hole than the policy says. The Redis backend runs the same rules in Lua.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    rate: float  # tokens per second
    burst: int

    @classmethod
    def per_minute(cls, name: str, per_minute: float, burst: int) -> Policy:
        return cls(name, per_minute / 60.0, burst)

    @property
    def window_seconds(self) -> int:
        """How long an empty bucket takes to fill: the window the burst is spread over."""
        return max(1, math.ceil(self.burst / self.rate))


@dataclass(frozen=True, slots=True)
class Bucket:
    tokens: float
    updated: float


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    # The policy that decided: the refusing one, or the tightest one when allowed.
    policy: Policy
    remaining: int
    # Seconds until a retry can succeed (0 when allowed).
    retry_after: float
    # Seconds until the deciding bucket is full again.
    reset_after: float

    @property
    def retry_after_seconds(self) -> int:
        return max(1, math.ceil(self.retry_after))


def refill(bucket: Bucket | None, policy: Policy, now: float) -> float:
    if bucket is None:
        return float(policy.burst)
    elapsed = max(0.0, now - bucket.updated)
    return min(float(policy.burst), bucket.tokens + elapsed * policy.rate)


def take(buckets: Sequence[Bucket | None], policies: Sequence[Policy], now: float,
         ) -> tuple[Decision, list[Bucket]]:
    """Take one token from each bucket if all have one; the new buckets and the decision."""
    count = len(policies)
    if count == 0 or len(buckets) != count:
        raise ValueError("one bucket per policy, at least one policy")
    # One pass and no per-bucket closures: this runs on every request the gateway serves.
    levels: list[float] = []
    # The longest wait among the buckets that are short of a token, and whose it is.
    wait, waiting = 0.0, -1
    for i in range(count):
        policy = policies[i]
        level = refill(buckets[i], policy, now)
        levels.append(level)
        if level < 1.0:
            needed = (1.0 - level) / policy.rate
            if needed > wait or waiting < 0:
                wait, waiting = needed, i
    allowed = waiting < 0
    if allowed:
        # The bucket with the fewest whole tokens left (the first of equals) speaks for the
        # decision.
        index, fewest = 0, math.inf
        for i in range(count):
            levels[i] -= 1.0
            whole = math.floor(levels[i])
            if whole < fewest:
                index, fewest = i, whole
    else:
        index = waiting
    policy, level = policies[index], levels[index]
    decision = Decision(
        allowed=allowed,
        policy=policy,
        remaining=max(0, math.floor(level)),
        retry_after=wait,
        reset_after=max(0.0, (policy.burst - level) / policy.rate),
    )
    return decision, [Bucket(level, now) for level in levels]
