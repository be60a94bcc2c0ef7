"""The worker's pipeline (how many runs it holds) and what ComfyUI's /queue says: pure, no I/O."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from dispatcher.comfyui.client import QueueState
from dispatcher.lease import Lease
from worker.pipeline import Held, Pipeline

TRANSCRIPTS = Path(__file__).resolve().parents[1] / "fixtures" / "transcripts"


def held(run_id: str) -> Held:
    return Held(Lease(run_id, "w", 1), prompt_id=f"p-{run_id}")


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_a_pipeline_holds_up_to_its_depth(depth: int) -> None:
    pipeline = Pipeline(depth)
    runs = [held(str(i)) for i in range(depth)]
    for run in runs:
        assert pipeline.wait_for_room(0)
        pipeline.add(run)
    assert pipeline.free == 0 and not pipeline.wait_for_room(0.01)
    pipeline.discard(runs[0])
    assert pipeline.free == 1 and pipeline.wait_for_room(0)


def test_a_run_ending_wakes_the_loop_waiting_for_room() -> None:
    pipeline = Pipeline(1)
    run = held("a")
    pipeline.add(run)
    timer = threading.Timer(0.05, pipeline.discard, (run,))
    timer.start()
    started = time.monotonic()
    assert pipeline.wait_for_room(5)
    assert time.monotonic() - started < 2
    timer.join()


def test_the_current_run_is_the_one_executing() -> None:
    pipeline = Pipeline(3)
    assert pipeline.current() is None
    first, second = held("a"), held("b")
    pipeline.add(first)
    pipeline.add(second)
    assert pipeline.current() is first  # none started yet: the first taken
    second.executing = True
    assert pipeline.current() is second
    assert [h.run_id for h in pipeline.runs()] == ["a", "b"]


def test_wait_empty() -> None:
    pipeline = Pipeline(2)
    assert pipeline.wait_empty(0)
    run = held("a")
    pipeline.add(run)
    assert not pipeline.wait_empty(0.01)
    pipeline.discard(run)
    pipeline.discard(run)  # twice: harmless
    assert pipeline.wait_empty(0)


def test_runs_post_in_the_order_they_were_taken() -> None:
    pipeline = Pipeline(3)
    a, b, c = held("a"), held("b"), held("c")
    for run in (a, b, c):
        pipeline.add(run)
    assert pipeline.wait_turn(a, 0)
    assert not pipeline.wait_turn(b, 0) and not pipeline.wait_turn(c, 0)
    pipeline.posted(a)
    assert pipeline.wait_turn(b, 0) and not pipeline.wait_turn(c, 0)
    pipeline.discard(b)  # failed before posting: the next one goes
    assert pipeline.wait_turn(c, 0)


def test_a_run_waiting_its_turn_is_woken_by_the_post_before_it() -> None:
    pipeline = Pipeline(2)
    a, b = held("a"), held("b")
    pipeline.add(a)
    pipeline.add(b)
    timer = threading.Timer(0.05, pipeline.posted, (a,))
    timer.start()
    assert pipeline.wait_turn(b, 5)
    timer.join()


def test_a_newer_attempt_of_a_run_supersedes_the_one_held() -> None:
    pipeline = Pipeline(2)
    old, new = held("a"), Held(Lease("a", "w", 2), prompt_id="p-a")
    pipeline.add(old)
    pipeline.add(new)
    assert old.superseded.is_set() and old.lost.is_set() and not new.lost.is_set()
    assert pipeline.get("a") is new and len(pipeline) == 1
    pipeline.discard(old)  # the old attempt's thread leaves: the new one stays held
    assert pipeline.get("a") is new
    assert pipeline.wait_turn(old, 0)  # and never waits on anything


def test_a_cancel_that_comes_between_claim_and_hold_is_not_lost() -> None:
    pipeline = Pipeline(2)
    assert pipeline.cancel("a") is None  # the claim read the record before the cancel
    run = held("a")
    pipeline.add(run)
    assert run.canceled.is_set()
    other = held("b")
    pipeline.add(other)
    assert pipeline.cancel("b") is other and other.canceled.is_set()


def test_queue_state_of_the_recorded_empty_queue() -> None:
    state = QueueState.from_reply(json.loads((TRANSCRIPTS / "get_queue.json").read_text()))
    assert state == QueueState((), (), {}) and "anything" not in state


def test_queue_state_knows_each_prompts_client() -> None:
    item = [3, "p1", {"1": {}}, {"client_id": "worker-a"}, ["1"]]
    pending = [[4, "p2", {}, {"client_id": "worker-b"}, []], [5, "p3", {}, {}, []]]
    state = QueueState.from_reply({"queue_running": [item], "queue_pending": pending})
    assert state.running == ("p1",) and state.pending == ("p2", "p3")
    assert "p2" in state and "p4" not in state
    assert state.clients == {"p1": "worker-a", "p2": "worker-b", "p3": ""}
