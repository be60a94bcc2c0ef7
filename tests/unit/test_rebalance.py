"""Which runs the scheduler asks back to move them to an idle worker (pure)."""

from __future__ import annotations

import pytest

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
