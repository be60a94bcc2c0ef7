"""Which runs the scheduler asks back to move them to an idle worker (pure), and when an idle worker wakes it."""

from __future__ import annotations

import pytest

from dispatcher import keys
from dispatcher.connections import Connections
from dispatcher.scheduling.dispatch import tell_idle
from dispatcher.scheduling.rebalance import ASK_AGAIN_SECONDS, InFlight, pick


def held(worker: str, *claims: tuple[str, float]) -> list[InFlight]:
    return [InFlight(run_id, worker, at) for run_id, at in claims]


@pytest.mark.parametrize(
    ("ready", "inflight", "expected"),
    [
        # a idles, b executes r1 with r2 posted behind it: r2 moves
        (["a", "b"], held("b", ("r1", 1.0), ("r2", 2.0)), ["r2"]),
        # nobody idles
        (["a", "b"], held("a", ("r0", 0.5)) + held("b", ("r1", 1.0), ("r2", 2.0)), []),
        # one run each: nothing waits behind another
        (["a", "b", "c"], held("a", ("r0", 0.5)) + held("b", ("r1", 1.0)), []),
        # a run handed out and not claimed yet will go to the idle worker: nothing to move
        (["a", "b"], held("b", ("r1", 1.0), ("r2", 2.0)) + [InFlight("r3", "", 0.0)], []),
        # two idle workers, three runs waiting: the latest claimed go first, one per idle worker
        (
            ["a", "b", "c", "d"],
            held("c", ("r1", 1.0), ("r2", 2.0), ("r3", 3.0)) + held("d", ("r4", 1.5), ("r5", 2.5)),
            ["r3", "r5"],
        ),
        # a worker that is not ready does not count as idle
        ([], held("b", ("r1", 1.0), ("r2", 2.0)), []),
    ],
    ids=["one-idle", "none-idle", "nothing-waits", "unclaimed", "latest-first", "not-ready"],
)
def test_pick(ready: list[str], inflight: list[InFlight], expected: list[str]) -> None:
    assert pick(ready, inflight, {}, now=100.0) == expected


def test_a_run_is_not_asked_twice_in_a_row() -> None:
    inflight = held("b", ("r1", 1.0), ("r2", 2.0), ("r3", 3.0))
    assert pick(["a", "b"], inflight, {"r3": 99.5}, now=100.0) == ["r2"]
    assert pick(["a", "b"], inflight, {"r3": 100.0 - ASK_AGAIN_SECONDS}, now=100.0) == ["r3"]


@pytest.mark.parametrize(
    ("inflight", "waiting", "delayed", "woken"),
    [
        (0, False, False, False),  # an idle fleet: no scheduler pass at each run's end
        (1, False, False, False),  # one run elsewhere: nothing can wait behind another
        (2, False, False, True),  # two: one may wait behind the other, to be moved here
        (0, True, False, True),  # a backlog: this worker has room now
        (0, False, True, True),  # a retry in its backoff
    ],
    ids=["idle-fleet", "one-inflight", "two-inflight", "backlog", "delayed"],
)
def test_an_idle_worker_wakes_the_scheduler_only_when_it_can_change_something(
    fake_conns: Connections, inflight: int, waiting: bool, delayed: bool, woken: bool
) -> None:
    redis = fake_conns.text
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(keys.SCHEDULER_WAKE)
    for i in range(inflight):
        redis.zadd(keys.INFLIGHT, {f"run{i}": i})
    if waiting:
        redis.rpush(keys.rotation("normal"), "default")
    if delayed:
        redis.zadd(keys.DELAYED, {"run9": 1.0})
    assert tell_idle(redis) is woken
    messages = [pubsub.get_message(timeout=0.05) for _ in range(3)]  # the first may be the subscription's
    assert [m["data"] for m in messages if m is not None] == (["idle"] if woken else [])
    pubsub.close()
