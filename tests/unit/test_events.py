from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dispatcher.comfyui.events import Outcome, Tracker, execution_seconds, history_gpu_seconds

TRANSCRIPTS = Path(__file__).resolve().parents[1] / "fixtures" / "transcripts"


def _recording(name: str) -> tuple[str, list[dict[str, Any]], int]:
    data = json.loads((TRANSCRIPTS / name).read_text())
    prompt_id = data["post_prompt"]["body"]["prompt_id"]
    return prompt_id, data["ws_messages"], len(data["workflow"])


def _end(prompt_id: str) -> list[dict[str, Any]]:
    # Recordings stop at the terminal event; ComfyUI then sends status and executing/null.
    return [
        {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}}},
        {"type": "executing", "data": {"node": None, "prompt_id": prompt_id}},
    ]


@pytest.mark.parametrize(
    ("name", "outcome"),
    [
        ("success_invert.json", Outcome.SUCCESS),
        ("cached_rerun.json", Outcome.SUCCESS),
        ("progress_sleep.json", Outcome.SUCCESS),
        ("runtime_error.json", Outcome.ERROR),
        ("slow_interrupted.json", Outcome.INTERRUPTED),
    ],
)
def test_recorded_streams_end_as_recorded(name: str, outcome: Outcome) -> None:
    prompt_id, messages, nodes = _recording(name)
    tracker = Tracker(prompt_id, total_nodes=nodes)
    seen: list[float] = []
    for message in messages + ([] if name == "progress_sleep.json" else _end(prompt_id)):
        tracker.feed(message)
        seen.append(tracker.progress)
    assert tracker.outcome is outcome
    assert tracker.ended
    assert seen == sorted(seen), "progress never goes back"
    if outcome is Outcome.SUCCESS:
        assert tracker.finished and tracker.progress == 1.0
    else:
        assert tracker.progress < 1.0


def test_error_carries_the_node_and_message() -> None:
    prompt_id, messages, nodes = _recording("runtime_error.json")
    tracker = Tracker(prompt_id, total_nodes=nodes)
    for message in messages:
        tracker.feed(message)
    assert tracker.outcome_data["node_id"] == "3"
    assert "outside the output folder" in tracker.outcome_data["exception_message"]


def test_success_needs_executing_null_to_finish() -> None:
    prompt_id, messages, nodes = _recording("success_invert.json")
    tracker = Tracker(prompt_id, total_nodes=nodes)
    for message in messages:
        tracker.feed(message)
    assert tracker.outcome is Outcome.SUCCESS
    assert not tracker.ended, "history is stored only before executing/null"


def test_frames_of_other_prompts_are_ignored() -> None:
    prompt_id, messages, nodes = _recording("success_invert.json")
    tracker = Tracker("someone-else", total_nodes=nodes)
    assert not any(tracker.feed(m) for m in messages + _end(prompt_id))
    assert tracker.outcome is None and tracker.progress == 0.0


@pytest.mark.parametrize(
    ("value", "maximum", "expected"),
    [(0.0, 0.3, 0.5), (0.15, 0.3, 0.75), (0.3, 0.3, 1.0), (5.0, 0.0, 0.5)],
)
def test_progress_of_a_node_with_a_bar(value: float, maximum: float, expected: float) -> None:
    tracker = Tracker("p", total_nodes=2)
    tracker.feed({"type": "executing", "data": {"node": "1", "prompt_id": "p"}})
    tracker.feed({"type": "executing", "data": {"node": "2", "prompt_id": "p"}})
    tracker.feed({"type": "progress", "data": {"value": value, "max": maximum, "node": "2", "prompt_id": "p"}})
    assert tracker.progress == pytest.approx(expected)


def _history_entry(name: str) -> dict[str, Any]:
    data = json.loads((TRANSCRIPTS / name).read_text())
    entry: dict[str, Any] = next(iter(data["history"].values()))
    return entry


@pytest.mark.parametrize(
    "name",
    ["success_invert.json", "cached_rerun.json", "progress_sleep.json", "runtime_error.json", "slow_interrupted.json"],
)
def test_gpu_seconds_from_the_socket_are_those_of_the_history(name: str) -> None:
    """The timestamps the websocket carries are the ones /history keeps: either gives the same GPU time."""
    prompt_id, messages, nodes = _recording(name)
    tracker = Tracker(prompt_id, total_nodes=nodes)
    for message in messages:
        tracker.feed(message)
    expected = history_gpu_seconds(_history_entry(name))
    assert expected is not None and expected >= 0
    assert tracker.gpu_seconds == expected


def test_the_recorded_sleep_took_its_seconds_of_gpu() -> None:
    # TestSleep of 0.3 s in the recorded graph, plus a few milliseconds of the other nodes
    assert history_gpu_seconds(_history_entry("progress_sleep.json")) == pytest.approx(0.3, abs=0.05)


@pytest.mark.parametrize("name", ["success_invert.json", "cached_rerun.json", "progress_sleep.json"])
def test_outputs_from_executed_events_are_the_history_outputs(name: str) -> None:
    prompt_id, messages, nodes = _recording(name)
    tracker = Tracker(prompt_id, total_nodes=nodes)
    for message in messages + ([] if name == "progress_sleep.json" else _end(prompt_id)):
        tracker.feed(message)
    assert tracker.outputs_complete
    assert tracker.outputs == _history_entry(name)["outputs"]


def test_outputs_are_incomplete_when_nodes_came_from_the_cache() -> None:
    tracker = Tracker("p", total_nodes=3)
    for message in [
        {"type": "execution_start", "data": {"prompt_id": "p", "timestamp": 1000}},
        {"type": "execution_cached", "data": {"nodes": ["1", "3"], "prompt_id": "p", "timestamp": 1001}},
        {"type": "execution_success", "data": {"prompt_id": "p", "timestamp": 1010}},
        {"type": "executing", "data": {"node": None, "prompt_id": "p"}},
    ]:
        tracker.feed(message)
    assert tracker.finished and tracker.gpu_seconds == 0.01
    assert not tracker.outputs_complete, "a cached output node may send nothing: ask /history"


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [(1000, 1250, 0.25), (1000, 1000, 0.0), (None, 1000, None), (1000, None, None), (2000, 1000, None)],
)
def test_execution_seconds(start: int | None, end: int | None, expected: float | None) -> None:
    assert execution_seconds(start, end) == expected


def test_history_without_timestamps_has_no_gpu_time() -> None:
    assert history_gpu_seconds({"status": {"messages": [["execution_start", {"prompt_id": "p"}]]}}) is None
    assert history_gpu_seconds({}) is None
