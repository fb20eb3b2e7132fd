"""The lockout decision, a pure function of the record, the policy and the time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.auth.domain import (
    FailureRecord,
    LockoutPolicy,
    locked_for,
    register_failure,
)

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
POLICY = LockoutPolicy(threshold=5, window=timedelta(minutes=15),
                       max_lock=timedelta(hours=24))


def fail_times(record: FailureRecord | None, times: list[datetime]) -> FailureRecord | None:
    for moment in times:
        record = register_failure(record, POLICY, moment).record
    return record


def test_no_record_means_not_locked() -> None:
    assert locked_for(None, T0) is None
    assert locked_for(FailureRecord(), T0) is None


def test_four_failures_do_not_lock() -> None:
    record = fail_times(None, [T0 + timedelta(minutes=i) for i in range(4)])
    assert record is not None
    assert record.failures == 4
    assert locked_for(record, T0 + timedelta(minutes=4)) is None


def test_the_fifth_failure_in_the_window_locks_for_the_window() -> None:
    record = fail_times(None, [T0 + timedelta(minutes=i) for i in range(4)])
    outcome = register_failure(record, POLICY, T0 + timedelta(minutes=4))
    assert outcome.locked_now
    assert outcome.record.locked_until == T0 + timedelta(minutes=19)
    assert locked_for(outcome.record, T0 + timedelta(minutes=4)) == 15 * 60
    assert outcome.record.failures == 0


def test_retry_after_rounds_up_and_is_at_least_one() -> None:
    record = FailureRecord(locked_until=T0 + timedelta(milliseconds=1))
    assert locked_for(record, T0) == 1
    record = FailureRecord(locked_until=T0 + timedelta(seconds=10, milliseconds=1))
    assert locked_for(record, T0) == 11


def test_the_lock_expires() -> None:
    record = FailureRecord(locked_until=T0)
    assert locked_for(record, T0 - timedelta(seconds=1)) == 1
    assert locked_for(record, T0) is None
    assert locked_for(record, T0 + timedelta(seconds=1)) is None


def test_failures_spread_beyond_the_window_never_lock() -> None:
    times = [T0 + timedelta(minutes=4 * i) for i in range(20)]
    record = None
    for moment in times:
        outcome = register_failure(record, POLICY, moment)
        assert not outcome.locked_now
        record = outcome.record


def test_the_window_opens_at_the_first_failure() -> None:
    record = fail_times(None, [T0, T0 + timedelta(minutes=14)])
    assert record is not None
    assert record.failures == 2
    record = fail_times(record, [T0 + timedelta(minutes=15)])
    assert record is not None
    assert record.failures == 1
    assert record.window_started_at == T0 + timedelta(minutes=15)


def lock_again(record: FailureRecord | None, start: datetime) -> FailureRecord:
    outcome = None
    for i in range(POLICY.threshold):
        outcome = register_failure(record, POLICY, start + timedelta(seconds=i))
        record = outcome.record
    assert outcome is not None
    assert outcome.locked_now
    return outcome.record


def test_consecutive_lockouts_double() -> None:
    record: FailureRecord | None = None
    start = T0
    durations = []
    for _ in range(4):
        record = lock_again(record, start)
        assert record.locked_until is not None
        last_failure = start + timedelta(seconds=POLICY.threshold - 1)
        durations.append(record.locked_until - last_failure)
        start = record.locked_until  # the next attack begins as soon as the lock ends
    assert durations == [timedelta(minutes=15 * 2 ** n) for n in range(4)]
    assert record is not None
    assert record.lockouts == 4


def test_second_lockout_lasts_twice_as_long() -> None:
    first = lock_again(None, T0)
    assert first.locked_until is not None
    second = lock_again(first, first.locked_until)
    assert second.locked_until is not None
    started = first.locked_until + timedelta(seconds=POLICY.threshold - 1)
    assert second.locked_until - started == timedelta(minutes=30)


def test_lock_duration_is_capped() -> None:
    assert POLICY.lock_duration(7) == timedelta(hours=16)
    assert POLICY.lock_duration(8) == timedelta(hours=24)
    assert POLICY.lock_duration(1000) == timedelta(hours=24)


def test_backoff_is_forgotten_after_a_quiet_window() -> None:
    first = lock_again(None, T0)
    assert first.locked_until is not None
    quiet = first.locked_until + POLICY.window
    again = lock_again(first, quiet)
    assert again.lockouts == 1
    assert again.locked_until == quiet + timedelta(seconds=POLICY.threshold - 1) + POLICY.window


def test_a_failure_during_a_lock_does_not_extend_it() -> None:
    locked = lock_again(None, T0)
    outcome = register_failure(locked, POLICY, T0 + timedelta(minutes=1))
    assert not outcome.locked_now
    assert outcome.record.locked_until == locked.locked_until


@pytest.mark.parametrize("threshold", [1, 3, 10])
def test_threshold_is_respected(threshold: int) -> None:
    policy = LockoutPolicy(threshold=threshold, window=timedelta(minutes=15),
                           max_lock=timedelta(hours=1))
    record = None
    for i in range(threshold):
        outcome = register_failure(record, policy, T0 + timedelta(seconds=i))
        assert outcome.locked_now == (i == threshold - 1)
        record = outcome.record
