"""The fake against the recordings of a real ComfyUI 0.3.64 (tests/fixtures/transcripts), field by field."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fake_comfy_helpers import (
    VARIABLE_KEYS,
    Comfy,
    assert_frames_like,
    assert_like,
    frames_until_idle,
    transcript,
    wait_for,
)

# Transcripts with a workflow that runs. Except progress_sleep, the recordings stop before the final
# status + executing(null) frames.
RUNS = ["success_invert", "progress_sleep", "runtime_error", "slow_interrupted", "cached_rerun"]
COMPLETE = {"progress_sleep"}
# The order the recordings were made in (their prompt numbers 0..6): replayed on one server, numbers and
# SaveImage counters must come out identical.
SESSION = [
    "progress_sleep",
    "success_invert",
    "validation_error",
    "validation_error_no_output",
    "runtime_error",
    "slow_interrupted",
    "cached_rerun",
]


def replay(comfy: Comfy, name: str) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    """Run a transcript's workflow like the recorder did: (POST reply, websocket frames, history)."""
    rec = transcript(name)
    client_id = str(uuid.uuid4())
    ws, first = comfy.connect(client_id)
    assert_like(rec.get("ws_messages", [first])[0], first)
    assert first["data"]["sid"] == client_id
    reply = comfy.submit(rec["workflow"], client_id)
    assert reply.status_code == rec["post_prompt"]["status"], reply.text
    body: dict[str, Any] = reply.json()
    if reply.status_code != 200:
        return body, [], {}
    prompt_id = body["prompt_id"]
    if name == "slow_interrupted":
        frames = wait_for(ws, "executing", node="2")
        assert comfy.post("/interrupt", json={"prompt_id": prompt_id}).status_code == 200
        frames += frames_until_idle(ws, prompt_id)
    else:
        frames = frames_until_idle(ws, prompt_id)
    return body, frames, comfy.history(prompt_id)


def check_frames(name: str, frames: list[dict[str, Any]], prompt_id: str) -> None:
    recorded = transcript(name)["ws_messages"][1:]
    if name in COMPLETE:
        assert_frames_like(recorded, frames)
        return
    assert_frames_like(recorded, frames[: len(recorded)])
    tail = frames[len(recorded) :]
    assert tail == [
        {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}}},
        {"type": "executing", "data": {"node": None, "prompt_id": prompt_id}},
    ]


def check_history(name: str, history: dict[str, Any], prompt_id: str, exact_number: bool) -> None:
    recorded = next(iter(transcript(name)["history"].values()))
    assert list(history) == [prompt_id]
    entry = history[prompt_id]
    number, queued_id, *rest = entry["prompt"]  # [number, prompt_id, prompt, extra_data, outputs_to_execute]
    assert isinstance(number, int) and queued_id == prompt_id
    number = number if exact_number else recorded["prompt"][0]
    assert_like(recorded, {**entry, "prompt": [number, recorded["prompt"][1], *rest]})


@pytest.mark.parametrize("name", RUNS)
def test_run_matches_recording(comfy: Comfy, name: str) -> None:
    if name == "cached_rerun":  # recorded after the same workflow had run: its files are rec_00003/4
        replay(comfy, "success_invert")
    body, frames, history = replay(comfy, name)
    assert_like(transcript(name)["post_prompt"]["body"], body, variable=VARIABLE_KEYS | {"number"})
    check_frames(name, frames, body["prompt_id"])
    check_history(name, history, body["prompt_id"], exact_number=False)


def test_session_replay_gives_recorded_numbers_and_files(comfy: Comfy) -> None:
    for name in SESSION:
        rec = transcript(name)
        body, frames, history = replay(comfy, name)
        if rec["post_prompt"]["status"] != 200:
            assert body == rec["post_prompt"]["body"]
            continue
        assert body["number"] == rec["post_prompt"]["body"]["number"]
        check_frames(name, frames, body["prompt_id"])
        check_history(name, history, body["prompt_id"], exact_number=True)


@pytest.mark.parametrize("name", ["validation_error", "validation_error_no_output"])
def test_validation_error_bodies_are_identical(comfy: Comfy, name: str) -> None:
    rec = transcript(name)
    reply = comfy.submit(rec["workflow"], "someone")
    assert reply.status_code == 400
    assert reply.json() == rec["post_prompt"]["body"]
    assert comfy.get("/queue").json() == {"queue_running": [], "queue_pending": []}


@pytest.mark.parametrize("prefix", ["", "/api"])
def test_idle_queue_is_identical(comfy: Comfy, prefix: str) -> None:
    assert comfy.get(prefix + "/queue").json() == transcript("get_queue")


def test_object_info_of_empty_image_is_identical(comfy: Comfy) -> None:
    assert comfy.get("/object_info/EmptyImage").json() == transcript("object_info_EmptyImage")
    everything = comfy.get("/api/object_info").json()
    assert everything["EmptyImage"] == transcript("object_info_EmptyImage")["EmptyImage"]
    assert comfy.get("/object_info/NoSuchNode").json() == {}


def test_system_stats_has_the_recorded_shape(comfy: Comfy) -> None:
    recorded = transcript("system_stats")
    stats = comfy.get("/system_stats").json()
    variable = VARIABLE_KEYS | {"ram_total", "ram_free", "vram_total", "vram_free", "torch_vram_total"}
    variable |= {"torch_vram_free", "python_version", "argv"}
    assert_like(recorded, stats, variable=variable)
    assert stats["system"]["comfyui_version"] == "0.3.64"
