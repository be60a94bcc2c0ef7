from __future__ import annotations

import pytest

from dispatcher.backoff import backoff_ceiling, full_jitter


@pytest.mark.parametrize(
    ("attempt", "base", "cap", "ceiling"),
    [(1, 1.0, 60.0, 1.0), (2, 1.0, 60.0, 2.0), (3, 1.0, 60.0, 4.0), (7, 1.0, 60.0, 60.0), (200, 0.5, 30.0, 30.0)],
)
def test_ceiling_doubles_up_to_the_cap(attempt: int, base: float, cap: float, ceiling: float) -> None:
    assert backoff_ceiling(attempt, base=base, cap=cap) == ceiling


@pytest.mark.parametrize("attempt", [1, 2, 5, 10])
def test_full_jitter_spans_zero_to_the_ceiling(attempt: int) -> None:
    assert full_jitter(attempt, uniform=lambda lo, hi: lo) == 0.0
    assert full_jitter(attempt, uniform=lambda lo, hi: hi) == backoff_ceiling(attempt)


def test_attempts_are_one_based() -> None:
    with pytest.raises(ValueError):
        backoff_ceiling(0)
