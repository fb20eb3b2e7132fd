"""Rate-limit stores: one process's memory, or Redis shared by several gateways.

Both apply ``ratelimit.take`` to the buckets of one client. Redis does it in one Lua
script, so a check is one atomic round trip whatever the number of buckets. When Redis
stops answering, the gateway keeps limiting from memory (never without a limit), probes
Redis in the background and goes back to it once it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Protocol

import structlog
from redis import asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from services.gateway import metrics
from services.gateway.ratelimit import Bucket, Decision, Policy, take

log = structlog.get_logger("ratelimit")

Clock = Callable[[], float]


class Limiter(Protocol):
    async def check(self, client: str, policies: Sequence[Policy]) -> Decision: ...

    async def close(self) -> None: ...


class MemoryLimiter:
    """Buckets in a bounded LRU: the least recently seen client is forgotten first, which
    at worst hands that client a fresh (full) bucket."""

    def __init__(self, max_clients: int, clock: Clock = time.monotonic) -> None:
        self._buckets: OrderedDict[tuple[str, str], Bucket] = OrderedDict()
        self._max = max_clients
        self._clock = clock

    def check_now(self, client: str, policies: Sequence[Policy]) -> Decision:
        now = self._clock()
        keys = [(policy.name, client) for policy in policies]
        buckets = self._buckets
        # Taken out and put back: a key put back goes to the end, the most recently seen.
        decision, new = take([buckets.pop(key, None) for key in keys], policies, now)
        for key, bucket in zip(keys, new, strict=True):
            buckets[key] = bucket
        while len(buckets) > self._max:
            buckets.popitem(last=False)
        return decision

    async def check(self, client: str, policies: Sequence[Policy]) -> Decision:
        return self.check_now(client, policies)

    async def close(self) -> None:
        self._buckets.clear()

    def __len__(self) -> int:
        return len(self._buckets)


# KEYS: one hash per bucket. ARGV: rate and burst per bucket, in KEYS order.
# Returns {allowed, retry_after, level_1, ..., level_n} as strings (Lua numbers would be
# truncated to integers on the way out). Redis's own clock is used so that gateways with
# skewed clocks still share one budget.
_TAKE_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local n = #KEYS
local levels = {}
local retry = 0
local allowed = 1
for i = 1, n do
  local rate = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local state = redis.call('HMGET', KEYS[i], 'tokens', 'updated')
  local tokens = tonumber(state[1])
  local updated = tonumber(state[2])
  local level = burst
  if tokens ~= nil and updated ~= nil then
    level = math.min(burst, tokens + math.max(0, now - updated) * rate)
  end
  if level < 1 then
    allowed = 0
    retry = math.max(retry, (1 - level) / rate)
  end
  levels[i] = level
end
local out = {tostring(allowed), string.format('%.6f', retry)}
for i = 1, n do
  local rate = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local level = levels[i]
  if allowed == 1 then level = level - 1 end
  redis.call('HSET', KEYS[i], 'tokens', string.format('%.6f', level),
             'updated', string.format('%.6f', now))
  redis.call('PEXPIRE', KEYS[i], math.ceil((burst - level) / rate * 1000) + 1000)
  out[#out + 1] = string.format('%.6f', level)
end
return out
"""


class RedisLimiter:
    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self._client = client
        self._prefix = prefix
        self._script = client.register_script(_TAKE_SCRIPT)

    async def check(self, client: str, policies: Sequence[Policy]) -> Decision:
        keys = [f"{self._prefix}{policy.name}:{client}" for policy in policies]
        args: list[float | int] = []
        for policy in policies:
            args.extend((repr(policy.rate), policy.burst))
        result = await self._script(keys=keys, args=args)
        allowed = result[0] in (b"1", "1")
        levels = [float(level) for level in result[2:]]
        # Rebuild the decision with the same pure function, from the levels Redis computed
        # (as if taken at time 0 with nothing elapsed).
        buckets = [Bucket(level + (1.0 if allowed else 0.0), 0.0) for level in levels]
        decision, _ = take(buckets, policies, 0.0)
        if decision.allowed != allowed:  # pragma: no cover - the two agree by construction
            raise RedisError("rate-limit script disagrees with the bucket rules")
        return decision

    async def ping(self) -> bool:
        return bool(await self._client.ping())

    async def close(self) -> None:
        await self._client.aclose()


class FallbackLimiter:
    """Redis first; memory while Redis is unreachable; back to Redis when it answers."""

    def __init__(self, primary: RedisLimiter, fallback: MemoryLimiter,
                 retry_seconds: float) -> None:
        self._primary = primary
        self._fallback = fallback
        self._retry_seconds = retry_seconds
        self._probe: asyncio.Task[None] | None = None
        metrics.REDIS_FALLBACK.set(0)

    @property
    def degraded(self) -> bool:
        return self._probe is not None

    async def check(self, client: str, policies: Sequence[Policy]) -> Decision:
        if self._probe is None:
            try:
                return await self._primary.check(client, policies)
            except (RedisError, OSError, TimeoutError) as exc:
                self._degrade(exc)
        return self._fallback.check_now(client, policies)

    def _degrade(self, exc: BaseException) -> None:
        if self._probe is not None:
            return
        log.error("ratelimit_redis_unreachable", error=type(exc).__name__,
                  action="limiting from memory until Redis answers")
        metrics.REDIS_FALLBACK.set(1)
        metrics.REDIS_FALLBACKS.inc()
        self._probe = asyncio.get_running_loop().create_task(self._recover())

    async def _recover(self) -> None:
        while True:
            await asyncio.sleep(self._retry_seconds)
            try:
                if await self._primary.ping():
                    break
            except (RedisError, OSError, TimeoutError):
                continue
        log.warning("ratelimit_redis_recovered")
        metrics.REDIS_FALLBACK.set(0)
        self._probe = None

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
            self._probe = None
        await self._primary.close()
        await self._fallback.close()


def redis_client(url: str, timeout_seconds: float) -> aioredis.Redis:
    # No retries: a slow or absent Redis must cost one timeout, then the memory limiter.
    return aioredis.Redis.from_url(url, socket_timeout=timeout_seconds,
                                   socket_connect_timeout=timeout_seconds,
                                   retry=Retry(NoBackoff(), 0))
