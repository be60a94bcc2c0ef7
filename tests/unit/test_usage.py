"""GPU-seconds and runs per tenant and day: the day maths (pure), and what ending attempts writes (fakeredis)."""

from __future__ import annotations

import time
from datetime import date

import pytest

from dispatcher import keys
from dispatcher.cancel import Canceller
from dispatcher.connections import Connections
from dispatcher.errors import ParameterError
from dispatcher.lease import Lease, RequeueResult
from dispatcher.runs import Run
from dispatcher.scheduling.recovery import Reaper
from dispatcher.usage import MAX_DAYS, day_range, read_usage, usage_day
from tests.unit.dispatch_helpers import Bench

TODAY = date(2026, 12, 1)


@pytest.fixture
def bench(fake_conns: Connections) -> Bench:
    return Bench.build(fake_conns)


@pytest.mark.parametrize(
    ("start", "end", "first", "last", "days"),
    [
        (None, None, "2026-11-02", "2026-12-01", 30),
        ("2026-11-30", None, "2026-11-30", "2026-12-01", 2),
        (None, "2026-06-30", "2026-06-01", "2026-06-30", 30),
        ("2026-02-27", "2026-03-01", "2026-02-27", "2026-03-01", 3),
        ("2024-02-28", "2024-03-01", "2024-02-28", "2024-03-01", 3),  # a leap day
        ("2026-12-01", "2026-12-01", "2026-12-01", "2026-12-01", 1),
    ],
)
def test_day_range(start: str | None, end: str | None, first: str, last: str, days: int) -> None:
    got = day_range(start, end, today=TODAY)
    assert (got[0].isoformat(), got[-1].isoformat(), len(got)) == (first, last, days)


@pytest.mark.parametrize(
    ("start", "end", "param"),
    [
        ("2026-13-01", None, "from"),
        ("yesterday", None, "from"),
        ("2026-1-1", None, "from"),
        (None, "2026-12-01T00:00", "to"),
        ("2026-12-02", "2026-12-01", "from"),
        ("2024-01-01", "2026-01-01", "from"),
        (None, "0001-01-05", "to"),  # the default 30 days would start before year 1
    ],
)
def test_bad_ranges_name_the_parameter(start: str | None, end: str | None, param: str) -> None:
    with pytest.raises(ParameterError) as info:
        day_range(start, end, today=TODAY)
    assert info.value.param == param


def test_the_longest_range() -> None:
    assert len(day_range("2025-12-01", "2026-12-01", today=TODAY)) == MAX_DAYS


@pytest.mark.parametrize(
    ("ts", "day"), [(0.0, "1970-01-01"), (1796083199.9, "2026-11-30"), (1796083200.0, "2026-12-01")]
)
def test_usage_day_is_utc(ts: float, day: str) -> None:
    assert usage_day(ts) == day


def _today(bench: Bench, tenant: str = "default") -> tuple[int, float]:
    (found,) = read_usage(bench.conns.text, tenant, [date.fromisoformat(usage_day(time.time()))]).days
    return found.runs, found.gpu_seconds


def _claimed(bench: Bench, tenant: str = "default") -> tuple[Run, Lease]:
    run = bench.submit(tenant=tenant)
    ((_, dispatch),) = bench.take(1)
    claim = bench.leases.claim(run.id, "w", dispatch)
    assert claim.lease is not None and claim.run is not None
    return claim.run, claim.lease


def test_a_run_that_ends_counts_once_with_its_gpu_time(bench: Bench) -> None:
    run, lease = _claimed(bench, "acme")
    assert bench.leases.complete(lease, run, "succeeded", gpu_seconds=0.25)
    assert bench.run(run.id).gpu_seconds == 0.25
    assert _today(bench, "acme") == (1, 0.25)
    assert not bench.leases.complete(lease, run, "succeeded", gpu_seconds=0.25)  # a second end writes nothing
    assert _today(bench, "acme") == (1, 0.25)
    assert _today(bench, "other") == (0, 0.0)


def test_every_attempt_adds_its_gpu_time_and_the_run_counts_at_its_end(bench: Bench) -> None:
    run, lease = _claimed(bench)
    result = bench.leases.requeue(lease, run, error={"type": "oom"}, delay=0.0, gpu_seconds=0.5)
    assert result is RequeueResult.RETRYING
    assert bench.run(run.id).gpu_seconds == 0.5 and _today(bench) == (0, 0.5)  # not ended: not a run yet
    ((_, dispatch),) = bench.take(1)
    second = bench.leases.claim(run.id, "w", dispatch)
    assert second.lease is not None and second.run is not None
    assert bench.leases.complete(second.lease, second.run, "failed", gpu_seconds=1.25)
    assert bench.run(run.id).gpu_seconds == 1.75 and _today(bench) == (1, 1.75)


def test_a_run_whose_worker_died_counts_with_the_time_known(bench: Bench) -> None:
    run, _ = _claimed(bench)
    bench.conns.text.hset(keys.run(run.id), "max_attempts", "1")
    bench.conns.text.delete(keys.run_lease(run.id))  # the worker died: its lease expired
    reaper = Reaper(bench.conns.text, bench.leases, dispatch_timeout=30, retry_base=0.001, retry_cap=0.001)
    assert reaper.reap().dead == 1
    assert _today(bench) == (1, 0.0)


def test_runs_that_never_reached_a_worker_are_not_counted(bench: Bench) -> None:
    run = bench.submit()
    Canceller(bench.conns.text, run_ttl_seconds=60).cancel(run)
    assert _today(bench) == (0, 0.0)
