"""dispatcher.eta: a run's ETA from its place, the ready workers and its workflow's mean (pure), and the moving
average of GPU-seconds the ending script keeps (on fakeredis)."""

from __future__ import annotations

import pytest
from redis import Redis

from dispatcher import keys
from dispatcher.connections import Connections
from dispatcher.eta import LUA_NOTE_SECONDS, WEIGHT, eta_seconds
from dispatcher.lease import Lease, RequeueResult
from dispatcher.runs import Run, RunStatus
from tests.unit.dispatch_helpers import Bench


@pytest.mark.parametrize(
    ("position", "workers", "mean", "running_for", "expected"),
    [
        # no basis
        (0, 1, None, None, None),  # no run of the workflow yet
        (0, 1, 0.0, None, None),
        (0, 1, -3.0, None, None),
        (0, 0, 10.0, None, None),  # no ready worker
        (5, -1, 10.0, None, None),
        (None, 2, 10.0, None, None),  # neither queued nor running
        (None, 0, None, 4.0, None),  # running, but no mean
        # queued: (position // workers + 1) runs' time
        (0, 1, 10.0, None, 10.0),
        (1, 1, 10.0, None, 20.0),
        (9, 1, 10.0, None, 100.0),
        (1, 2, 10.0, None, 10.0),  # the second worker takes it at once
        (2, 2, 10.0, None, 20.0),
        (3, 2, 10.0, None, 20.0),
        (4, 2, 10.0, None, 30.0),
        (5, 3, 4.0, None, 8.0),
        (0, 4, 2.5, None, 2.5),
        (0, 1, 1 / 3, None, 0.333),  # rounded to the millisecond
        (2, 1, 1 / 3, None, 1.0),
        # running: what is left of the mean (workers and position do not matter)
        (None, 0, 10.0, 3.0, 7.0),
        (None, 4, 10.0, 0.0, 10.0),
        (7, 1, 10.0, 2.5, 7.5),
        (None, 0, 10.0, 10.0, 0.0),
        (None, 0, 10.0, 25.0, 0.0),  # over its mean: about to end, never negative
        (None, 0, 1.0, 0.1234, 0.877),
    ],
)
def test_eta_seconds(
    position: int | None, workers: int, mean: float | None, running_for: float | None, expected: float | None
) -> None:
    assert eta_seconds(position=position, workers=workers, mean_seconds=mean, running_for=running_for) == expected


# -- the moving average, as a script made of LUA_NOTE_SECONDS ---------------------------------------------------------

_NOTE = LUA_NOTE_SECONDS + "\nnote_seconds(KEYS[1])\nreturn 1\n"


def note(redis: Redis, run_id: str, workflow: str, gpu: str | None) -> None:
    record = {"workflow": workflow} | ({"gpu_seconds": gpu} if gpu is not None else {})
    redis.hset(keys.run(run_id), mapping=record)
    redis.register_script(_NOTE)(keys=[keys.run(run_id)])


def mean(redis: Redis, workflow: str) -> float | None:
    value = redis.hget(keys.WORKFLOW_SECONDS, workflow)
    return float(value) if value is not None else None


@pytest.mark.parametrize(
    ("old", "gpu", "expected"),
    [
        (None, "12.5", 12.5),  # the first run sets it
        ("10", "20", 10 + WEIGHT * 10),
        ("10", "5", 10 - WEIGHT * 5),
        ("10", "10", 10.0),
        ("10", "0", 10.0),  # no GPU time recorded: nothing to learn from
        ("10", None, 10.0),
        ("10", "-1", 10.0),
        (None, "0", None),
        (None, "0.0000004", 0.0),  # kept to the microsecond
    ],
)
def test_note_seconds_moves_the_average(
    fake_conns: Connections, old: str | None, gpu: str | None, expected: float | None
) -> None:
    redis = fake_conns.text
    if old is not None:
        redis.hset(keys.WORKFLOW_SECONDS, "invert", old)
    note(redis, "r1", "invert", gpu)
    if expected is None:
        assert mean(redis, "invert") is None
    else:
        assert mean(redis, "invert") == pytest.approx(expected)


def test_each_workflow_has_its_own_average(fake_conns: Connections) -> None:
    redis = fake_conns.text
    note(redis, "r1", "invert", "4")
    note(redis, "r2", "txt2img", "30")
    note(redis, "r3", "invert", "14")
    assert mean(redis, "invert") == pytest.approx(4 + WEIGHT * 10)
    assert mean(redis, "txt2img") == 30.0


def test_the_average_converges_to_a_steady_time(fake_conns: Connections) -> None:
    redis = fake_conns.text
    note(redis, "r0", "invert", "100")
    for i in range(60):
        note(redis, f"r{i + 1}", "invert", "10")
    assert mean(redis, "invert") == pytest.approx(10.0, abs=1e-3)


# -- the same through the lease's ending script -----------------------------------------------------------------------


@pytest.fixture
def bench(fake_conns: Connections) -> Bench:
    return Bench.build(fake_conns)


def claimed(bench: Bench) -> tuple[Run, Lease]:
    run = bench.submit()
    bench.take(100)
    run = bench.run(run.id)
    claim = bench.leases.claim(run.id, "w1", run.dispatches)
    assert claim.lease is not None
    return bench.run(run.id), claim.lease


def test_a_success_moves_its_workflows_average(bench: Bench) -> None:
    run, lease = claimed(bench)
    assert bench.leases.complete(lease, run, RunStatus.SUCCEEDED, gpu_seconds=10.0)
    assert mean(bench.conns.text, "invert") == 10.0
    run, lease = claimed(bench)
    assert bench.leases.complete(lease, run, RunStatus.SUCCEEDED, gpu_seconds=20.0)
    assert mean(bench.conns.text, "invert") == pytest.approx(10 + WEIGHT * 10)


@pytest.mark.parametrize("status", [RunStatus.FAILED, RunStatus.CANCELED])
def test_a_run_that_did_not_succeed_leaves_the_average(bench: Bench, status: RunStatus) -> None:
    bench.conns.text.hset(keys.WORKFLOW_SECONDS, "invert", "10")
    run, lease = claimed(bench)
    assert bench.leases.complete(lease, run, status, error={"message": "x"}, gpu_seconds=99.0)
    assert mean(bench.conns.text, "invert") == 10.0


def test_a_dead_lettered_run_leaves_the_average(bench: Bench) -> None:
    run, lease = claimed(bench)
    bench.conns.text.hset(keys.run(run.id), "max_attempts", "1")
    result = bench.leases.requeue(lease, run, error={"message": "oom"}, delay=0, gpu_seconds=50.0)
    assert result is RequeueResult.DEAD
    assert mean(bench.conns.text, "invert") is None


def test_a_success_without_gpu_time_leaves_the_average(bench: Bench) -> None:
    run, lease = claimed(bench)
    assert bench.leases.complete(lease, run, RunStatus.SUCCEEDED)
    assert mean(bench.conns.text, "invert") is None


def test_the_average_counts_every_attempt_of_a_run(bench: Bench) -> None:
    run, lease = claimed(bench)
    assert bench.leases.requeue(lease, run, error={}, delay=0, gpu_seconds=3.0) is RequeueResult.RETRYING
    bench.take(100)
    run = bench.run(run.id)
    claim = bench.leases.claim(run.id, "w1", run.dispatches)
    assert claim.lease is not None
    assert bench.leases.complete(claim.lease, bench.run(run.id), RunStatus.SUCCEEDED, gpu_seconds=4.0)
    assert mean(bench.conns.text, "invert") == pytest.approx(7.0)
