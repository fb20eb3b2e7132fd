"""The pure rules behind slow-client protection: the streamed body's rate window, the
per-client slot count, and the settings that tie them to the pool."""

from __future__ import annotations

import pytest

from services.gateway.bodyrate import MinRate, RateWindow
from services.gateway.settings import load_settings
from services.gateway.slots import ClientSlots
from shared.config import SettingsError
from tests.support import service_env, strong_secret

RULE = MinRate(bytes_per_second=100, window_seconds=4)  # 400 bytes per 4 s, steps of 1 s


def test_rate_window_is_judged_only_once_a_full_window_has_passed() -> None:
    window = RateWindow(RULE)
    # Nothing at all for the first 3.9 s: the window is not full yet.
    assert window.passes(3.9, 0)
    assert not window.passes(4.0, 0)


def test_rate_window_passes_a_body_at_the_rate() -> None:
    window = RateWindow(RULE)
    for second in range(1, 30):
        assert window.passes(float(second), second * 100)


def test_rate_window_cuts_a_trickle_below_the_rate() -> None:
    window = RateWindow(RULE)
    results = [window.passes(float(second), second * 90) for second in range(1, 10)]
    assert results[:3] == [True, True, True]
    assert results[3] is False


def test_rate_window_slides_so_an_early_burst_does_not_pay_for_a_later_stall() -> None:
    window = RateWindow(RULE)
    assert window.passes(1.0, 10_000)
    # The burst is in the first step; once it slides out of the window, the stall shows.
    assert window.passes(4.0, 10_000)
    assert not window.passes(5.0, 10_000)


def test_rate_window_forgives_a_pause_the_client_makes_up_within_the_window() -> None:
    window = RateWindow(RULE)
    assert window.passes(1.0, 100)
    assert window.passes(2.0, 100)
    assert window.passes(3.0, 100)
    assert window.passes(4.0, 400)
    assert window.passes(5.0, 500)


def test_rate_window_next_check_is_the_next_step_end() -> None:
    window = RateWindow(RULE)
    assert window.next_check == 1.0
    window.passes(1.0, 100)
    assert window.next_check == 2.0
    window.passes(3.5, 350)  # two step ends passed at once
    assert window.next_check == 4.0


def test_client_slots_cap_each_client_and_free_on_release() -> None:
    slots = ClientSlots(2)
    assert slots.acquire("a")
    assert slots.acquire("a")
    assert not slots.acquire("a")
    assert slots.acquire("b")
    slots.release("a")
    assert slots.acquire("a")
    for _ in range(2):
        slots.release("a")
    slots.release("b")
    assert slots.held("a") == slots.held("b") == 0
    assert slots._held == {}  # no entry outlives what it counted


@pytest.fixture
def env() -> dict[str, str]:
    return service_env("postgresql://postgres@127.0.0.1:5432/x", jwt_key=strong_secret(),
                       internal_key=strong_secret())


def test_slow_client_defaults(env: dict[str, str]) -> None:
    settings = load_settings(env)
    limits = settings.limits
    assert limits.json_deadline_seconds == 10.0
    assert limits.stream_min_bytes_per_second == 1024.0
    assert limits.stream_rate_window_seconds == 30.0
    assert limits.streams_per_client == 4
    assert settings.upstreams.in_flight_per_client == 16
    # A small share: one client can never hold the whole pool.
    assert settings.upstreams.in_flight_per_client * 4 < settings.upstreams.pool_size


def test_a_per_client_share_larger_than_the_pool_is_refused(env: dict[str, str]) -> None:
    with pytest.raises(SettingsError) as problems:
        load_settings({**env, "Upstreams__PoolSize": "8", "Upstreams__InFlightPerClient": "9"})
    assert "Upstreams__InFlightPerClient" in str(problems.value)
