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
    for i in range(depth):
        assert pipeline.wait_for_room(0)
        pipeline.add(held(str(i)))
    assert pipeline.free == 0 and not pipeline.wait_for_room(0.01)
    pipeline.discard("0")
    assert pipeline.free == 1 and pipeline.wait_for_room(0)


def test_a_run_ending_wakes_the_loop_waiting_for_room() -> None:
    pipeline = Pipeline(1)
    pipeline.add(held("a"))
    timer = threading.Timer(0.05, pipeline.discard, ("a",))
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
    pipeline.add(held("a"))
    assert not pipeline.wait_empty(0.01)
    pipeline.discard("a")
    pipeline.discard("a")  # twice: harmless
    assert pipeline.wait_empty(0)


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
