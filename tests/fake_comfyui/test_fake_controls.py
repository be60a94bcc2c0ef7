"""The fake's test controls: ``/fake/stats``, ``/fake/control`` faults, ``/fake/reset``, and its start-up config."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
import websocket
from fake_comfy_helpers import Comfy, frames_until_idle, recv_json, transcript, wait_for, wait_until

from dispatcher.fake_comfyui import BackgroundFake, FakeConfig
from dispatcher.fake_comfyui.failures import OOM_TIPS

INVERT = transcript("success_invert")["workflow"]


def test_stats_count_posts_runs_and_uploads(comfy: Comfy) -> None:
    assert comfy.stats() == {"executed": 0, "started": 0, "prompts": {}, "uploads": [], "posted": 0, "queued": 0,
                             "failed": 0, "interrupted": 0, "model_loads": 0, "views": 0,
                             "loaded_model": None}  # fmt: skip
    comfy.run(INVERT, prompt_id="a")
    comfy.run(INVERT, prompt_id="a")
    comfy.submit(transcript("validation_error")["workflow"], "c")
    reply = comfy.post("/upload/image", files={"image": ("u.png", b"\x89PNG")})
    assert reply.json()["name"] == "u.png"
    stats = comfy.stats()
    assert (stats["executed"], stats["started"], stats["prompts"]) == (2, 2, {"a": 2})
    assert (stats["posted"], stats["queued"], stats["uploads"]) == (3, 2, ["u.png"])


def test_exec_seconds_control_slows_each_prompt(comfy: Comfy) -> None:
    assert comfy.control(exec_seconds=0.3)["exec_seconds"] == 0.3
    started = time.monotonic()
    _, frames = comfy.run(INVERT)
    assert time.monotonic() - started >= 0.3
    assert frames[-3]["type"] == "execution_success"


def _stamps(comfy: Comfy, prompt_id: str) -> dict[str, int]:
    entry = comfy.history(prompt_id)[prompt_id]
    return {name: data["timestamp"] for name, data in entry["status"]["messages"]}


def test_history_timestamps_are_the_real_times_of_execution(comfy: Comfy) -> None:
    """Each prompt holds the fake exec_seconds from execution_start to execution_success, by the wall clock, and
    a prompt queued behind another starts the moment it ends: the idle gap read from history is the real one."""
    comfy.control(exec_seconds=0.2)
    client_id = "stamps"
    ws, _ = comfy.connect(client_id)
    before = time.time() * 1000
    first, second = (comfy.submit(INVERT, client_id).json()["prompt_id"] for _ in range(2))
    frames_until_idle(ws, second)
    after = time.time() * 1000
    a, b = _stamps(comfy, first), _stamps(comfy, second)
    for stamps in (a, b):
        assert 200 <= stamps["execution_success"] - stamps["execution_start"] <= 260
        assert before <= stamps["execution_start"] and stamps["execution_success"] <= after
    assert 0 <= b["execution_start"] - a["execution_success"] <= 20


def test_exec_seconds_from_config(tmp_path: Path) -> None:
    with BackgroundFake(FakeConfig(port=0, exec_seconds=0.2, output_dir=str(tmp_path))) as fake:
        client = Comfy(fake)
        try:
            started = time.monotonic()
            client.run(INVERT)
            assert time.monotonic() - started >= 0.2
        finally:
            client.close()
    assert not (tmp_path / "temp").exists() or not any((tmp_path / "temp").iterdir())


def test_fail_node_type_raises_the_requested_exception(comfy: Comfy) -> None:
    comfy.control(fail_node_type="ImageInvert", exception_type="torch.OutOfMemoryError",
                  exception_message="Allocation on device")  # fmt: skip
    prompt_id, frames = comfy.run(INVERT)
    error = frames[-3]
    assert error["type"] == "execution_error"
    assert error["data"]["node_id"] == "2" and error["data"]["node_type"] == "ImageInvert"
    assert error["data"]["exception_type"] == "torch.OutOfMemoryError"
    assert error["data"]["exception_message"] == f"Allocation on device\n{OOM_TIPS}"
    assert error["data"]["executed"] == ["1", "4"]
    assert list(error["data"]["current_inputs"]) == ["image"]
    entry = comfy.history(prompt_id)[prompt_id]
    assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
    assert list(entry["outputs"]) == ["4"]  # the preview that ran before the failure is kept, as in ComfyUI
    comfy.control(fail_node_type=None)
    assert comfy.run(INVERT)[1][-3]["type"] == "execution_success"
    assert comfy.stats()["failed"] == 1


def test_fail_times_fails_only_that_many_prompts(comfy: Comfy) -> None:
    comfy.control(fail_node_type="ImageInvert", fail_times=2)
    outcomes = [comfy.run(INVERT)[1][-3]["type"] for _ in range(3)]
    assert outcomes == ["execution_error", "execution_error", "execution_success"]
    assert comfy.control()["fail_node_type"] is None


def test_hang_blocks_until_interrupted(comfy: Comfy) -> None:
    comfy.control(hang=True)
    prompt_id, frames = comfy_run_interrupting(comfy)
    assert frames[-3]["type"] == "execution_interrupted"
    assert frames[-3]["data"] == {"prompt_id": prompt_id, "node_id": "1", "node_type": "EmptyImage", "executed": [],
                                  "timestamp": frames[-3]["data"]["timestamp"]}  # fmt: skip
    assert comfy.stats()["interrupted"] == 1


def comfy_run_interrupting(comfy: Comfy) -> tuple[str, list[dict[str, Any]]]:
    client = str(uuid.uuid4())
    ws, _ = comfy.connect(client)
    prompt_id = comfy.submit(INVERT, client).json()["prompt_id"]
    wait_for(ws, "executing", node="1")
    comfy.post("/interrupt")
    return prompt_id, frames_until_idle(ws, prompt_id)


def test_clearing_hang_lets_the_prompt_finish(comfy: Comfy) -> None:
    client = str(uuid.uuid4())
    ws, _ = comfy.connect(client)
    comfy.control(hang=True)
    prompt_id = comfy.submit(INVERT, client).json()["prompt_id"]
    wait_for(ws, "executing", node="1")
    comfy.control(exec_seconds=0.0)  # another change keeps it hanging
    assert comfy.history(prompt_id) == {}
    comfy.control(hang=False)
    assert frames_until_idle(ws, prompt_id)[-3]["type"] == "execution_success"


def test_drop_ws_closes_sockets_after_execution_start(comfy: Comfy) -> None:
    client = str(uuid.uuid4())
    ws, _ = comfy.connect(client)
    bystander, _ = comfy.connect("bystander")
    comfy.control(drop_ws=True)
    prompt_id = comfy.submit(INVERT, client).json()["prompt_id"]
    frames = wait_for(ws, "execution_start")
    assert [f["type"] for f in frames] == ["status", "status", "execution_start"]
    for sock in (ws, bystander):
        # Closed by the server (or cut, if this test answered the close frame later than the fake waits).
        with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
            while True:
                recv_json(sock)
    entry = wait_until(lambda: comfy.history(prompt_id))  # the prompt itself still completes
    assert entry[prompt_id]["status"]["status_str"] == "success"
    assert comfy.get("/fake/stats").json()["executed"] == 1
    again, _ = comfy.connect(client)  # one-shot: the next prompt keeps its socket
    second = comfy.submit(INVERT, client).json()["prompt_id"]
    assert frames_until_idle(again, second)[-3]["type"] == "execution_success"


def test_reject_next_answers_500_then_recovers(comfy: Comfy) -> None:
    comfy.control(reject_next=2)
    for _ in range(2):
        reply = comfy.submit(INVERT, "c")
        assert reply.status_code == 500 and reply.text.startswith("500 Internal Server Error")
    assert comfy.submit(INVERT, "c").status_code == 200
    stats = comfy.stats()
    assert (stats["posted"], stats["queued"]) == (3, 1)
    assert comfy.control()["reject_next"] == 0


def test_reset_clears_history_stats_and_faults(comfy: Comfy) -> None:
    prompt_id, _ = comfy.run(INVERT)
    comfy.control(fail_node_type="SaveImage", hang=True, reject_next=3, exec_seconds=2.0)
    assert comfy.post("/fake/reset").json() == {"ok": True}
    assert comfy.history(prompt_id) == {}
    assert comfy.stats()["executed"] == 0
    controls = comfy.control()
    assert controls["fail_node_type"] is None and controls["hang"] is False
    assert (controls["reject_next"], controls["exec_seconds"]) == (0, 0.0)


@pytest.mark.parametrize(
    "body",
    [{"nope": 1}, {"exec_seconds": -1}, {"hang": "yes"}, {"reject_next": 1.5}, {"exception_type": ""}, [1]],
)
def test_bad_controls_are_refused(comfy: Comfy, body: object) -> None:
    reply = comfy.post("/fake/control", json=body)
    assert reply.status_code == 400 and "error" in reply.json()
    assert comfy.control()["exec_seconds"] == 0.0


def test_fault_fields_of_the_config(tmp_path: Path) -> None:
    config = FakeConfig(port=0, output_dir=str(tmp_path), fail_node_type="EmptyImage", reject_next=1)
    with BackgroundFake(config) as fake:
        client = Comfy(fake)
        try:
            assert client.submit(INVERT, "c").status_code == 500
            _, frames = client.run(INVERT)
            assert frames[-3]["data"]["exception_type"] == "RuntimeError"
        finally:
            client.close()


def test_own_temp_dir_is_removed_at_shutdown() -> None:
    fake = BackgroundFake().start()
    assert fake.state is not None
    base = Path(fake.state.dirs.base)
    assert (base / "output").is_dir() and (base / "input").is_dir()
    assert requests.get(fake.url + "/system_stats", timeout=5).status_code == 200
    fake.stop()
    assert not base.exists()
