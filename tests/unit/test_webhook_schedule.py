"""The webhook retry schedule: exponential delays with jitter above a floor, bounded by webhook_retry_for."""

from __future__ import annotations

import pytest

from dispatcher.settings import load_settings
from dispatcher.webhooks.schedule import RetrySchedule

DEFAULTS = load_settings({})
SCHEDULE = RetrySchedule(
    base=DEFAULTS.webhook_retry_base, cap=DEFAULTS.webhook_retry_cap, retry_for=DEFAULTS.webhook_retry_for
)


def lowest(low: float, high: float) -> float:
    return low


def highest(low: float, high: float) -> float:
    return high


@pytest.mark.parametrize(
    ("attempt", "low", "high"),
    [(1, 2.0, 4.0), (2, 2.0, 8.0), (3, 2.0, 16.0), (7, 2.0, 256.0), (8, 2.0, 300.0), (40, 2.0, 300.0)],
)
def test_delays_grow_exponentially_up_to_the_cap(attempt: int, low: float, high: float) -> None:
    assert SCHEDULE.delay(attempt, uniform=lowest) == low
    assert SCHEDULE.delay(attempt, uniform=highest) == high
    for _ in range(50):
        assert low <= SCHEDULE.delay(attempt) <= high


def test_the_last_attempt_lands_on_the_bound_then_none() -> None:
    assert SCHEDULE.next_at(first_at=100.0, now=110.0, delay=5.0) == 115.0
    assert SCHEDULE.next_at(first_at=100.0, now=3698.0, delay=5.0) == 3700.0  # clamped to first_at + retry_for
    assert SCHEDULE.next_at(first_at=100.0, now=3700.0, delay=5.0) is None


@pytest.mark.parametrize("uniform", [lowest, highest], ids=["shortest delays", "longest delays"])
@pytest.mark.parametrize("attempt_seconds", [0.0, DEFAULTS.webhook_timeout], ids=["refused", "timing out"])
def test_the_worst_case_still_retries_for_the_whole_bound(uniform: object, attempt_seconds: float) -> None:
    times = SCHEDULE.plan(attempt_seconds=attempt_seconds, uniform=uniform)  # type: ignore[arg-type]
    # However the draws fall, attempts go on until webhook_retry_for: far beyond a 5-minute outage ...
    assert times[-1] == pytest.approx(DEFAULTS.webhook_retry_for)
    assert times[-1] >= 300
    # ... and a receiver back at any moment gets the next attempt within the cap (plus one attempt's time).
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert max(gaps) <= DEFAULTS.webhook_retry_cap + attempt_seconds
    assert any(300 <= t <= 300 + DEFAULTS.webhook_retry_cap + attempt_seconds for t in times)


def test_attempts_stay_few_with_typical_delays() -> None:
    # The longest draws give the fewest attempts; the middle ones what to expect.
    assert len(SCHEDULE.plan(uniform=highest)) <= 20
    assert len(SCHEDULE.plan(uniform=lambda low, high: (low + high) / 2)) <= 40


def test_a_test_sized_schedule_retries_within_seconds() -> None:
    quick = RetrySchedule(base=0.2, cap=1.0, retry_for=20.0)
    times = quick.plan(uniform=highest)
    assert times[:4] == pytest.approx([0.0, 0.4, 1.2, 2.2])
    assert times[-1] == pytest.approx(20.0)
