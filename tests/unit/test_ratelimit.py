"""dispatcher.ratelimit: leaky-bucket decisions and the RateLimit header fields, without Redis."""

from __future__ import annotations

import random

import pytest

from dispatcher.ratelimit import Decision, decide, describe, drain_window, headers, leak


@pytest.mark.parametrize(
    ("level", "last", "now", "rate", "expected"),
    [
        (5.0, 100.0, 100.0, 2.0, 5.0),  # no time passed
        (5.0, 100.0, 101.0, 2.0, 3.0),  # leaked 2
        (5.0, 100.0, 110.0, 2.0, 0.0),  # never below empty
        (5.0, 100.0, 99.0, 2.0, 5.0),  # a clock gone backwards leaks nothing
        (0.0, 0.0, 1e9, 10.0, 0.0),
    ],
)
def test_leak(level: float, last: float, now: float, rate: float, expected: float) -> None:
    assert leak(level, last, now, rate) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("level", "last", "now", "rate", "burst", "cost", "expected"),
    [
        # fresh bucket: admitted, level = cost
        (0.0, 0.0, 50.0, 1.0, 3, 1, Decision(True, 1.0, 0.0, 2, 0.0)),
        # the last unit of room: admitted, none left, room again in 1/rate
        (2.0, 10.0, 10.0, 0.5, 3, 1, Decision(True, 3.0, 0.0, 0, 2.0)),
        # full: denied, nothing changes but the leak; retry when one unit has leaked
        (3.0, 10.0, 10.0, 0.5, 3, 1, Decision(False, 3.0, 2.0, 0, 2.0)),
        # full a while ago: 1 s at 0.5/s leaked half a unit, half a unit still to go
        (3.0, 10.0, 11.0, 0.5, 3, 1, Decision(False, 2.5, 1.0, 0, 1.0)),
        # exactly one unit leaked: admitted again
        (3.0, 10.0, 12.0, 0.5, 3, 1, Decision(True, 3.0, 0.0, 0, 2.0)),
        # a cost of 3 needs 3 units of room
        (1.0, 0.0, 0.0, 1.0, 3, 3, Decision(False, 1.0, 1.0, 2, 1.0)),
        (0.0, 0.0, 0.0, 1.0, 3, 3, Decision(True, 3.0, 0.0, 0, 3.0)),
        # fractional level: remaining rounds down
        (1.5, 0.0, 0.0, 1.0, 5, 1, Decision(True, 2.5, 0.0, 2, 0.0)),
    ],
)
def test_decide(level: float, last: float, now: float, rate: float, burst: int, cost: int, expected: Decision) -> None:
    got = decide(level, last, now, rate=rate, burst=burst, cost=cost)
    assert got.allowed is expected.allowed
    assert got.level == pytest.approx(expected.level)
    assert got.retry_after == pytest.approx(expected.retry_after)
    assert got.remaining == expected.remaining
    assert got.reset == pytest.approx(expected.reset)


def test_float_noise_never_denies_a_unit_that_has_leaked() -> None:
    # 0.1 s at 10/s is one unit, although 10 - (4.1 - 4.0) * 10 in floats is 9.000000000000004.
    assert 10 - (4.1 - 4.0) * 10 > 9
    assert decide(10.0, 4.0, 4.1, rate=10.0, burst=10).allowed


@pytest.mark.parametrize(("rate", "burst", "cost"), [(0.0, 5, 1), (-1.0, 5, 1), (1.0, 5, 6), (1.0, 5, 0)])
def test_impossible_limits_are_refused(rate: float, burst: int, cost: int) -> None:
    with pytest.raises(ValueError):
        decide(0.0, 0.0, 0.0, rate=rate, burst=burst, cost=cost)


@pytest.mark.parametrize(
    ("rate", "burst", "seconds", "step"),
    [(10.0, 5, 20.0, 0.01), (2.0, 20, 30.0, 0.05), (0.5, 1, 60.0, 0.1), (100.0, 100, 5.0, 0.001)],
)
def test_admitted_never_exceed_rate_times_time_plus_burst(rate: float, burst: int, seconds: float, step: float) -> None:
    """Offered far faster than the rate, a bucket admits rate x T + burst, no more and (nearly) no less."""
    level, last, admitted, now = 0.0, 0.0, 0, 0.0
    while now <= seconds:
        decision = decide(level, last, now, rate=rate, burst=burst)
        if decision.allowed:
            level, last, admitted = decision.level, now, admitted + 1
        now += step
    ceiling = rate * seconds + burst
    assert ceiling - 1 - rate * step <= admitted <= ceiling


def test_a_denied_decision_says_when_it_would_pass() -> None:
    rng = random.Random(7)
    for _ in range(200):
        rate, burst = rng.uniform(0.1, 50), rng.randint(1, 20)
        level, now = rng.uniform(0, burst), rng.uniform(0, 100)
        decision = decide(level, now, now, rate=rate, burst=burst)
        if not decision.allowed:
            later = decide(level, now, now + decision.retry_after, rate=rate, burst=burst)
            assert later.allowed
            sooner = decide(level, now, now + decision.retry_after * 0.99 - 1e-6, rate=rate, burst=burst)
            assert not sooner.allowed


@pytest.mark.parametrize(
    ("decision", "rate", "burst", "expected"),
    [
        (
            describe(True, 1.0, rate=10.0, burst=100),
            10.0,
            100,
            {"RateLimit-Policy": '"submit";q=100;w=10', "RateLimit": '"submit";r=99;t=0'},
        ),
        (
            describe(True, 3.0, rate=0.5, burst=3),
            0.5,
            3,
            {"RateLimit-Policy": '"submit";q=3;w=6', "RateLimit": '"submit";r=0;t=2'},
        ),
        (
            describe(False, 2.75, rate=0.5, burst=3),
            0.5,
            3,
            {"RateLimit-Policy": '"submit";q=3;w=6', "RateLimit": '"submit";r=0;t=2', "Retry-After": "2"},
        ),
        (  # a tiny wait still says at least one second
            describe(False, 2.9999, rate=100.0, burst=3),
            100.0,
            3,
            {"RateLimit-Policy": '"submit";q=3;w=1', "RateLimit": '"submit";r=0;t=1', "Retry-After": "1"},
        ),
        (  # the drain window rounds up: 7 units at 2/s take 3.5 s
            describe(True, 0.0, rate=2.0, burst=7),
            2.0,
            7,
            {"RateLimit-Policy": '"submit";q=7;w=4', "RateLimit": '"submit";r=7;t=0'},
        ),
    ],
)
def test_headers(decision: Decision, rate: float, burst: int, expected: dict[str, str]) -> None:
    assert headers(decision, rate=rate, burst=burst, policy_name="submit") == expected


def test_policy_names_are_structured_field_strings() -> None:
    fields = headers(describe(True, 0.0, rate=1.0, burst=1), rate=1.0, burst=1, policy_name='a "b" \\c')
    assert fields["RateLimit"].startswith('"a \\"b\\" \\\\c";')
    with pytest.raises(ValueError):
        headers(describe(True, 0.0, rate=1.0, burst=1), rate=1.0, burst=1, policy_name="caf\u00e9")


@pytest.mark.parametrize(("rate", "burst", "window"), [(10.0, 100, 10), (3.0, 10, 4), (1000.0, 1, 1), (0.1, 1, 10)])
def test_drain_window(rate: float, burst: int, window: int) -> None:
    assert drain_window(rate, burst) == window
