"""The batch command's Tracker against a stub client: few requests, no end missed, fallbacks when batches go."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import pytest

from comfy_dispatch_client import Batch, Client, NotFound, Run
from dispatcher.cli.follow import LOOSE_PER_ROUND, Tracker
from tests.sdk.fakes import run_json


def run(run_id: str, status: str = "queued", batch_id: str | None = "b1") -> Run:
    return Run.from_json(run_json(run_id, status, batch_id=batch_id))


class StubApi:
    """Runs by id, batches as lists of run ids; counts every request."""

    def __init__(self) -> None:
        self.runs: dict[str, Run] = {}
        self.batches: dict[str, list[str]] = {}
        self.calls: list[str] = []

    def put(self, *runs: Run) -> None:
        for item in runs:
            self.runs[item.id] = item
            if item.batch_id is not None and item.id not in self.batches.setdefault(item.batch_id, []):
                self.batches[item.batch_id].append(item.id)

    def get_batch(self, batch_id: str, *, limit: int | None = None, cursor: str | None = None) -> Batch:
        self.calls.append(f"batch {batch_id}")
        if batch_id not in self.batches:
            raise NotFound(404, detail=f"no batch {batch_id}")
        runs = [self.runs[i] for i in self.batches[batch_id]]
        counts: dict[str, int] = {}
        for item in runs:
            counts[item.status.value] = counts.get(item.status.value, 0) + 1
        ended = sum(1 for item in runs if item.ended)
        data: dict[str, Any] = {
            "id": batch_id,
            "total": len(runs),
            "counts": counts,
            "ended": ended,
            "done": ended == len(runs),
            "eta_seconds": 12.0,
            "runs": [],
            "next_cursor": None,
        }
        return Batch.from_json(data)

    def batch_runs(self, batch_id: str, *, page_size: int = 500) -> Iterator[Run]:
        self.calls.append(f"pages {batch_id}")
        return iter([self.runs[i] for i in self.batches[batch_id]])

    def get(self, run_id: str) -> Run:
        self.calls.append(f"run {run_id}")
        return self.runs[run_id]


@pytest.fixture
def api() -> StubApi:
    return StubApi()


def tracker_of(api: StubApi) -> Tracker:
    return Tracker(cast(Client, api))


def test_a_batch_is_read_whole_only_when_its_counts_move(api: StubApi) -> None:
    api.put(run("a"), run("b"), run("c"))
    tracker = tracker_of(api)
    tracker.add(1, api.runs["a"])
    tracker.add(2, api.runs["b"])
    assert tracker.poll() == [] and api.calls == ["batch b1", "pages b1"]
    api.calls.clear()
    assert tracker.poll() == [] and api.calls == ["batch b1"]  # nothing moved: one small request
    api.put(run("a", "running", "b1"))
    assert tracker.poll() == [] and tracker.counts() == {"running": 1, "queued": 1}
    api.put(run("a", "succeeded", "b1"), run("c", "failed", "b1"))  # c is not followed
    ended = tracker.poll()
    assert [(line, r.id, r.status.value) for line, r in ended] == [(1, "a", "succeeded")]
    assert len(tracker) == 1 and tracker.eta() == 12.0


def test_a_run_added_to_a_batch_already_read_is_read_though_counts_stay(api: StubApi) -> None:
    api.put(run("a"), run("b", "succeeded"))
    tracker = tracker_of(api)
    tracker.add(1, api.runs["a"])
    tracker.poll()
    # A later chunk replays a run of the same batch, which ended meanwhile: the counts have not moved since.
    tracker.add(2, run("b"))
    assert [(line, r.id) for line, r in tracker.poll()] == [(2, "b")]


def test_runs_without_a_batch_or_whose_batch_is_gone_are_read_one_by_one(api: StubApi) -> None:
    api.put(run("a", "succeeded", None), run("b", "running", "gone"))
    api.batches.pop("gone")
    tracker = tracker_of(api)
    tracker.add(1, run("a", "queued", None))
    tracker.add(2, run("b", "queued", "gone"))
    assert [r.id for _, r in tracker.poll()] == ["a"]  # b's batch answered 404: b is read alone from now
    api.calls.clear()
    api.put(run("b", "canceled", None))
    assert [r.id for _, r in tracker.poll()] == ["b"] and api.calls == ["run b"]
    assert len(tracker) == 0


def test_loose_runs_are_read_a_bounded_number_per_round(api: StubApi) -> None:
    tracker = tracker_of(api)
    for i in range(LOOSE_PER_ROUND + 5):
        api.put(run(f"r{i}", "running", None))
        tracker.add(i, api.runs[f"r{i}"])
    tracker.poll()
    assert len(api.calls) == LOOSE_PER_ROUND
    api.calls.clear()
    tracker.poll()
    assert api.calls[:5] == [f"run r{i}" for i in range(LOOSE_PER_ROUND, LOOSE_PER_ROUND + 5)]
