"""Behaviour of the fake's routes and websocket beyond the recordings (real ComfyUI semantics)."""

from __future__ import annotations

import re
import uuid

import pytest
import websocket
from fake_comfy_helpers import (
    Comfy,
    frames_until_idle,
    recv_json,
    saved,
    sleeper,
    transcript,
    wait_for,
    wait_until,
)

INVERT = transcript("success_invert")["workflow"]


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"filename": "missing.png"}, 404),
        ({}, 404),
        ({"filename": "../secret.png"}, 400),
        ({"filename": "/etc/passwd"}, 400),
        ({"filename": "a..png"}, 400),
        ({"filename": "x.png", "type": "models"}, 400),
        ({"filename": "x.png", "subfolder": "../.."}, 403),
    ],
)
def test_view_refuses_bad_or_missing_files(comfy: Comfy, params: dict[str, str], status: int) -> None:
    assert comfy.get("/view", params=params).status_code == status


def test_upload_refuses_escaping_subfolders_and_missing_image(comfy: Comfy) -> None:
    reply = comfy.post("/upload/image", files={"image": ("x.png", b"x")}, data={"subfolder": "../.."})
    assert reply.status_code == 400
    assert comfy.post("/upload/image", data={"type": "input"}).status_code == 400


def test_prompts_run_one_at_a_time_in_order(comfy: Comfy) -> None:
    client = str(uuid.uuid4())
    ws, _ = comfy.connect(client)
    ids = [comfy.submit(sleeper(0.05, prefix=f"p{i}"), client).json()["prompt_id"] for i in range(3)]
    frames = []
    for prompt_id in ids:
        frames += frames_until_idle(ws, prompt_id)
    lifecycle = [(f["type"], f["data"]["prompt_id"]) for f in frames
                 if f["type"] in ("execution_start", "execution_success")]  # fmt: skip
    assert lifecycle == [(kind, p) for p in ids for kind in ("execution_start", "execution_success")]
    # Each prompt's frames are contiguous: nothing of the next one starts before the previous ends.
    owners = [f["data"]["prompt_id"] for f in frames if "prompt_id" in f["data"]]
    assert owners == sorted(owners, key=ids.index)


def test_queue_lists_items_and_deletes_pending_only(comfy: Comfy) -> None:
    comfy.control(hang=True)
    running = comfy.submit(INVERT, "c").json()["prompt_id"]
    wait_until(lambda: comfy.get("/queue").json()["queue_running"])
    pending = [comfy.submit(INVERT, "c").json()["prompt_id"] for _ in range(3)]
    queue = comfy.get("/queue").json()
    (item,) = queue["queue_running"]
    assert item == [0, running, INVERT, {"client_id": "c"}, ["3", "4"]]
    assert [i[1] for i in queue["queue_pending"]] == pending
    assert comfy.get("/prompt").json() == {"exec_info": {"queue_remaining": 4}}

    assert comfy.post("/queue", json={"delete": [pending[0], running]}).status_code == 200
    queue = comfy.get("/queue").json()
    assert [i[1] for i in queue["queue_pending"]] == pending[1:]
    assert [i[1] for i in queue["queue_running"]] == [running]
    comfy.post("/api/queue", json={"clear": True})
    assert comfy.get("/queue").json()["queue_pending"] == []
    comfy.control(hang=False)
    wait_until(lambda: comfy.history(running))
    assert comfy.get("/prompt").json() == {"exec_info": {"queue_remaining": 0}}


def test_interrupt_only_stops_the_running_prompt(comfy: Comfy) -> None:
    client = str(uuid.uuid4())
    ws, _ = comfy.connect(client)
    comfy.control(hang=True)
    first = comfy.submit(INVERT, client).json()["prompt_id"]
    wait_for(ws, "executing", node="1", prompt_id=first)
    second = comfy.submit(INVERT, client).json()["prompt_id"]
    assert comfy.post("/interrupt", json={"prompt_id": second}).status_code == 200  # pending: ignored
    assert comfy.post("/interrupt", json={"prompt_id": "unknown"}).status_code == 200
    assert [i[1] for i in comfy.get("/queue").json()["queue_running"]] == [first]
    assert comfy.post("/interrupt", json={"prompt_id": first}).status_code == 200
    frames = frames_until_idle(ws, first)
    assert frames[-3]["type"] == "execution_interrupted" and frames[-3]["data"]["node_id"] == "1"
    assert comfy.history(first)[first]["status"]["status_str"] == "error"
    wait_for(ws, "executing", node="1", prompt_id=second)  # the pending one now runs (and hangs)
    comfy.control(hang=False)
    assert frames_until_idle(ws, second)[-3]["type"] == "execution_success"


def test_interrupt_while_idle_does_not_hit_the_next_prompt(comfy: Comfy) -> None:
    assert comfy.post("/interrupt").status_code == 200
    assert comfy.post("/interrupt", data="not json").status_code == 200
    _, frames = comfy.run(INVERT)
    assert frames[-3]["type"] == "execution_success"


def test_same_prompt_id_runs_twice(comfy: Comfy) -> None:
    for _ in range(2):
        prompt_id, frames = comfy.run(INVERT, prompt_id="fixed-id")
        assert prompt_id == "fixed-id" and frames[-3]["type"] == "execution_success"
    assert comfy.stats()["prompts"] == {"fixed-id": 2}
    assert list(comfy.get("/history").json()) == ["fixed-id"]
    assert saved(comfy, "fixed-id")[0]["filename"] == "rec_00003_.png"


def test_execution_events_only_reach_their_client(comfy: Comfy) -> None:
    mine, _ = comfy.connect("mine")
    other, _ = comfy.connect("other")
    prompt_id = comfy.submit(INVERT, "mine").json()["prompt_id"]
    frames_until_idle(mine, prompt_id)
    seen: list[str] = []
    while not (seen and seen[-1] == "status" and seen.count("status") == 3):
        seen.append(recv_json(other)["type"])
    # ComfyUI broadcasts status only; every other event goes to the prompt's client (0.3.64: progress_state too).
    assert seen == ["status", "status", "status"]


def test_reconnecting_with_the_same_client_id_takes_over(comfy: Comfy) -> None:
    old, _ = comfy.connect("same")
    comfy.control(hang=True)
    prompt_id = comfy.submit(INVERT, "same").json()["prompt_id"]
    wait_for(old, "executing", node="1")
    new, first = comfy.connect("same")
    assert first["data"]["sid"] == "same"
    assert recv_json(new) == {"type": "executing", "data": {"node": "1"}}  # where the running prompt is
    comfy.control(hang=False)
    assert frames_until_idle(new, prompt_id)[-3]["type"] == "execution_success"
    old.settimeout(0.2)
    leftovers = []
    try:
        while True:
            leftovers.append(recv_json(old)["type"])
    except websocket.WebSocketTimeoutException:
        pass
    assert set(leftovers) <= {"status"}


def test_socket_without_client_id_gets_a_generated_sid(comfy: Comfy) -> None:
    _, first = comfy.connect()
    assert first["type"] == "status" and re.fullmatch(r"[0-9a-f]{32}", first["data"]["sid"])


def test_history_listing_and_deletion(comfy: Comfy) -> None:
    ids = [comfy.run(INVERT)[0] for _ in range(3)]
    assert list(comfy.get("/history").json()) == ids
    assert list(comfy.get("/history", params={"max_items": 2}).json()) == ids[1:]
    assert comfy.history("unknown") == {}
    comfy.post("/history", json={"delete": [ids[0]]})
    assert list(comfy.get("/api/history").json()) == ids[1:]
    comfy.post("/history", json={"clear": True})
    assert comfy.get("/history").json() == {}


def test_history_is_empty_while_running(comfy: Comfy) -> None:
    comfy.control(hang=True)
    prompt_id = comfy.submit(INVERT, "c").json()["prompt_id"]
    wait_until(lambda: comfy.get("/queue").json()["queue_running"])
    assert comfy.history(prompt_id) == {}
    comfy.control(hang=False)
    wait_until(lambda: comfy.history(prompt_id))


@pytest.mark.parametrize("path", ["/prompt", "/api/prompt", "/queue", "/history", "/free"])
def test_body_that_is_not_json_gets_a_bare_500(comfy: Comfy, path: str) -> None:
    reply = comfy.post(path, data="{nope")
    assert reply.status_code == 500
    assert reply.text == "500 Internal Server Error\n\nServer got itself in trouble"


def test_post_without_prompt(comfy: Comfy) -> None:
    reply = comfy.post("/prompt", json={"client_id": "c"})
    assert reply.status_code == 400
    assert reply.json()["error"]["type"] == "no_prompt"


def test_numbers_front_and_explicit(comfy: Comfy) -> None:
    comfy.control(hang=True)
    assert comfy.submit(INVERT, "c").json()["number"] == 0
    assert comfy.submit(INVERT, "c", front=True).json()["number"] == -1
    assert comfy.submit(INVERT, "c", number=7).json()["number"] == 7.0
    assert comfy.submit(INVERT, "c").json()["number"] == 2
    pending = [item[0] for item in comfy.get("/queue").json()["queue_pending"]]
    assert sorted(pending) == [-1, 2, 7.0] and pending[0] == -1
    comfy.control(hang=False)
    comfy.post("/queue", json={"clear": True})


def test_free_and_features(comfy: Comfy) -> None:
    assert comfy.post("/free", json={"unload_models": True, "free_memory": True}).status_code == 200
    assert comfy.get("/features").json()["supports_preview_metadata"] is True
