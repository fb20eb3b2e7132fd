"""Logins: 50 concurrent logins at bcrypt cost 12 while another client polls ``/health``.

The logins go straight to auth (with the internal identity the gateway would add), so that
the gateway's strict login rate limit does not shape the burst: what is measured is auth's
bcrypt pool and its event loop. The reference is one bcrypt check timed in this process,
alternating with the bursts (A B A B ...): auth cannot log in faster than its bound cores
÷ that time.

Then the bounded hash queue: a burst larger than workers + queue must be answered 503 with
``Retry-After`` for the excess, at once, instead of piling up.

Last, whether a login tells a username exists after ``Auth__BcryptCost`` changes: auth is
restarted at cost 10 (the owner's hash still at 12), then at 12 (the hash rehashed to 10 by
a login in between), and each time failed logins for an unknown name and for the owner's
name with a wrong password alternate one at a time; their medians must stay within 5 %.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import statistics
import time
from dataclasses import dataclass

import aiohttp
import bcrypt

from bench.common import (
    Report,
    Result,
    percentile,
    ratios,
    say,
    stack,
    strong_secret,
    work_dir,
)

NAME = "logins"
TARGETS = (
    ("health_p99_during_logins_ms", 50.0, False),
    ("logins_vs_bcrypt_bound", 0.9, True),
    ("hash_queue_overflow_503_share", 1.0, True),
    ("unknown_vs_owner_gap_after_cost_fall", 0.05, False),
    ("unknown_vs_owner_gap_after_cost_rise", 0.05, False),
)
LOWER_COST = 10
# Failed logins must never lock the owner's name out while they are being timed.
LOCKOUT_THRESHOLD = 100
COST = 12
CONCURRENT = 50
QUEUE_SIZE = 64


@dataclass(frozen=True, slots=True)
class Burst:
    logins_per_second: float
    health_ms: list[float]
    failures: int

    def __str__(self) -> str:
        return (f"{self.logins_per_second:.2f} logins/s, /health p99 "
                f"{percentile(self.health_ms, 0.99):.1f} ms over {len(self.health_ms)} polls, "
                f"failures {self.failures}")


def bcrypt_check_seconds(stored: bytes, password: bytes, times: int = 3) -> float:
    samples = []
    for _ in range(times):
        started = time.perf_counter()
        bcrypt.checkpw(password, stored)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


class Client:
    def __init__(self, auth_url: str, internal_key: str) -> None:
        from shared.config import KeySet, Secret
        from shared.identity import INTERNAL_TOKEN_HEADER, internal_codec

        self.auth_url = auth_url
        self.header = INTERNAL_TOKEN_HEADER
        self.codec = internal_codec(KeySet(Secret(internal_key)), "auth")

    def identity(self) -> dict[str, str]:
        from shared.identity import mint_internal_token

        token = mint_internal_token(self.codec, audience="auth", user_id=None, session_id=None,
                                    client_ip="127.0.0.1", user_agent="tempo-bench")
        return {self.header: token}

    async def post(self, session: aiohttp.ClientSession, path: str, body: dict[str, str]
                   ) -> tuple[int, str | None, float]:
        started = time.perf_counter()
        async with session.post(f"{self.auth_url}{path}", json=body,
                                headers=self.identity()) as response:
            await response.read()
            return response.status, response.headers.get("Retry-After"), \
                time.perf_counter() - started


async def poll_health(url: str, stop: asyncio.Event, samples: list[float]) -> None:
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            started = time.perf_counter()
            async with session.get(url) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"/health answered {response.status}")
            samples.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(0.005)


async def burst(client: Client, credentials: dict[str, str], count: int) -> tuple[
        list[tuple[int, str | None, float]], float, list[float]]:
    stop = asyncio.Event()
    health: list[float] = []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        poller = asyncio.create_task(poll_health(f"{client.auth_url}/health", stop, health))
        await asyncio.sleep(0.05)
        started = time.perf_counter()
        answers = await asyncio.gather(*(client.post(session, "/auth/login", credentials)
                                         for _ in range(count)))
        elapsed = time.perf_counter() - started
        stop.set()
        await poller
    return answers, elapsed, health


async def run(quick: bool) -> Report:
    rounds = 3 if quick else 5
    workers = len(os.sched_getaffinity(0))
    internal_key = strong_secret()
    settings = {
        "Internal__SecretKey": internal_key,
        "Auth__BcryptCost": str(COST),
        "Auth__HashWorkers": str(workers),
        "Auth__HashQueueSize": str(QUEUE_SIZE),
        "Auth__LockoutThreshold": str(LOCKOUT_THRESHOLD),
    }
    with work_dir("logins-") as folder:
        async with stack(folder / "stack", env=settings) as running:
            auth_pid = running.pid("auth")
            bound = len(os.sched_getaffinity(auth_pid))
            client = Client(running.service_url("auth"), internal_key)
            credentials = {"username": "bench-runner", "password": secrets.token_urlsafe(18)}
            async with aiohttp.ClientSession() as session:
                status, _, _ = await client.post(session, "/auth/register", credentials)
                if status not in (200, 201):
                    raise RuntimeError(f"register answered {status}")
            password = credentials["password"].encode()
            stored = bcrypt.hashpw(password, bcrypt.gensalt(COST))
            checks: list[float] = []
            bursts: list[Burst] = []
            say(f"logins: {rounds} rounds of one bcrypt check ↔ {CONCURRENT} concurrent "
                f"logins; auth bound to {bound} cores, {workers} hash workers")
            for round_number in range(1, rounds + 1):
                check = await asyncio.to_thread(bcrypt_check_seconds, stored, password)
                checks.append(check)
                say(f"  round {round_number}/{rounds} bcrypt check: {check * 1000:.0f} ms")
                answers, elapsed, health = await burst(client, credentials, CONCURRENT)
                failures = sum(1 for status, _, _ in answers if status != 200)
                result = Burst(CONCURRENT / elapsed, health, failures)
                bursts.append(result)
                say(f"  round {round_number}/{rounds} logins: {result}")

            overflow_total = CONCURRENT + workers + QUEUE_SIZE
            answers, _, _ = await burst(client, credentials, overflow_total)

            samples = 15 if quick else 30
            timings = []
            for stored_cost, configured in ((COST, LOWER_COST), (LOWER_COST, COST)):
                running.services["auth"].env["Auth__BcryptCost"] = str(configured)
                await running.restart("auth")
                timings.append(await time_failures(client, credentials, samples,
                                                   stored_cost, configured))
    out = report(checks, bursts, answers, bound=bound, workers=workers, rounds=rounds,
                 overflow_total=overflow_total, quick=quick)
    add_cost_change(out, timings)
    return out


@dataclass(frozen=True, slots=True)
class FailureTimes:
    """Failed logins after a cost change, before the owner's hash is rehashed."""

    stored_cost: int
    configured: int
    unknown_ms: list[float]
    owner_ms: list[float]

    @property
    def gap(self) -> float:
        unknown, owner = statistics.median(self.unknown_ms), statistics.median(self.owner_ms)
        return abs(unknown / owner - 1)


async def time_failures(client: Client, credentials: dict[str, str], samples: int,
                        stored_cost: int, configured: int) -> FailureTimes:
    """Alternate (A B B A ...) an unknown name and the owner's with a wrong password, one
    request at a time, then log in so the owner's hash follows the configured cost."""
    unknown: list[float] = []
    owner: list[float] = []
    wrong = {"username": credentials["username"], "password": secrets.token_urlsafe(18)}
    async with aiohttp.ClientSession() as session:

        async def fail_unknown() -> None:
            # A fresh name each time, so no lockout of it ever answers early.
            body = {"username": f"nobody-{secrets.token_hex(6)}", "password": wrong["password"]}
            status, _, seconds = await client.post(session, "/auth/login", body)
            if status != 401:
                raise RuntimeError(f"unknown-name login answered {status}")
            unknown.append(seconds * 1000)

        async def fail_owner() -> None:
            status, _, seconds = await client.post(session, "/auth/login", wrong)
            if status != 401:
                raise RuntimeError(f"wrong-password login answered {status}")
            owner.append(seconds * 1000)

        # One of each first, not counted: the first requests after a restart pay for
        # connections and caches.
        await fail_unknown()
        await fail_owner()
        unknown.clear()
        owner.clear()
        for index in range(samples):
            order = (fail_unknown, fail_owner) if index % 2 == 0 else (fail_owner, fail_unknown)
            for step in order:
                await step()
        status, _, _ = await client.post(session, "/auth/login", credentials)
        if status != 200:
            raise RuntimeError(f"owner login answered {status}")
    times = FailureTimes(stored_cost, configured, unknown, owner)
    say(f"  cost {stored_cost} → {configured}: unknown name median "
        f"{statistics.median(unknown):.0f} ms, owner wrong password median "
        f"{statistics.median(owner):.0f} ms, gap {times.gap:.3f}")
    return times


def add_cost_change(out: Report, timings: list[FailureTimes]) -> None:
    for times in timings:
        direction = "fall" if times.configured < times.stored_cost else "rise"
        out.notes.append(
            f"after a cost {direction} (owner's hash at {times.stored_cost}, configured "
            f"{times.configured}): failed login median, unknown name "
            f"{statistics.median(times.unknown_ms):.0f} ms vs owner with a wrong password "
            f"{statistics.median(times.owner_ms):.0f} ms over {len(times.owner_ms)} each, "
            f"alternating; gap {times.gap:.3f}")
        out.results.append(Result(f"unknown_vs_owner_gap_after_cost_{direction}", times.gap,
                                  0.05, higher=False))


def report(checks: list[float], bursts: list[Burst], overflow: list[tuple[int, str | None,
           float]], *, bound: int, workers: int, rounds: int, overflow_total: int,
           quick: bool) -> Report:
    usable = min(bound, workers)
    ideal = [usable / check for check in checks]
    achieved = [b.logins_per_second for b in bursts]
    share = ratios(achieved, ideal)
    all_health = [ms for b in bursts for ms in b.health_ms]
    health_p99 = percentile(all_health, 0.99)
    capacity = workers + QUEUE_SIZE
    refused = [(s, r, t) for s, r, t in overflow if s == 503]
    with_retry = [x for x in refused if x[1] and x[1].isdigit() and int(x[1]) >= 1]
    ok = sum(1 for s, _, _ in overflow if s == 200)
    expected_refusals = overflow_total - capacity
    out = Report("Logins (bcrypt cost 12)", header=(
        "round", "one bcrypt check ms", "ideal logins/s", "logins/s", "ratio",
        "/health p99 ms", "failed"))
    for index, (check, burst_result) in enumerate(zip(checks, bursts, strict=True), 1):
        out.rows.append((str(index), f"{check * 1000:.0f}", f"{usable / check:.2f}",
                         f"{burst_result.logins_per_second:.2f}",
                         f"{burst_result.logins_per_second * check / usable:.3f}",
                         f"{percentile(burst_result.health_ms, 0.99):.1f}",
                         str(burst_result.failures)))
    refused_ms = [t * 1000 for _, _, t in refused]
    out.notes += [
        f"logins/s ÷ (bound cores {usable} ÷ one check): {share}",
        f"/health: {len(all_health)} polls during the bursts, p50 "
        f"{percentile(all_health, 0.5):.1f} ms, p99 {health_p99:.1f} ms, max "
        f"{max(all_health, default=float('nan')):.1f} ms",
        f"hash queue: {overflow_total} concurrent logins against capacity {capacity} "
        f"({workers} workers + queue {QUEUE_SIZE}): {ok} × 200, {len(refused)} × 503 "
        f"({len(with_retry)} with Retry-After), expected at least {expected_refusals} refusals"
        + (f"; the 503s came back in a median {statistics.median(refused_ms):.0f} ms"
           if refused_ms else ""),
        f"{rounds} interleaved rounds{' (quick)' if quick else ''}; logins go to auth "
        "directly with an internal identity, the poller calls auth's /health",
    ]
    out.results += [
        Result("health_p99_during_logins_ms", health_p99, 50.0, higher=False),
        Result("logins_vs_bcrypt_bound", share.median, 0.9),
        Result("hash_queue_overflow_503_share",
               len(with_retry) / expected_refusals if expected_refusals else float("nan"), 1.0),
    ]
    return out
