"""Simulated model loads: a prompt that switches checkpoint (or diffusion model) pays ``model_load_seconds``.

Durations are read from the history entry's ``execution_start``/``execution_success`` stamps (milliseconds,
truncated: a duration may read 1 ms short of the time slept).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_comfy_helpers import Comfy, frames_until_idle, recv_json, wait_for

from dispatcher.fake_comfyui import BackgroundFake, FakeConfig

LOAD = 0.3
LOAD_MS = int(LOAD * 1000)
SLACK_MS = 150  # scheduling on a busy 2-core machine, never a second load
MODELS = {"checkpoints": ("sd15.safetensors", "sdxl.safetensors"), "diffusion_models": ("flux.safetensors",)}


@pytest.fixture
def slow(tmp_path: Path) -> Iterator[Comfy]:
    """A fake that takes :data:`LOAD` seconds to load a model."""
    config = FakeConfig(port=0, output_dir=str(tmp_path / "comfy"), models=MODELS, model_load_seconds=LOAD)
    with BackgroundFake(config) as fake:
        client = Comfy(fake)
        yield client
        client.close()


def checkpoint(name: str, seed: int = 1) -> dict[str, Any]:
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": name}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "3": {"class_type": "KSampler", "inputs": {
            "seed": seed, "steps": 1, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
            "model": ["4", 0], "positive": ["6", 0], "negative": ["6", 0], "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "ckpt"}},
    }  # fmt: skip


def unet(name: str) -> dict[str, Any]:
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": name, "weight_dtype": "default"}},
        "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
    }


def duration_ms(comfy: Comfy, graph: dict[str, Any]) -> int:
    prompt_id, frames = comfy.run(graph)
    assert frames[-3]["type"] == "execution_success", frames[-3]
    messages = comfy.history(prompt_id)[prompt_id]["status"]["messages"]
    stamps = {name: data["timestamp"] for name, data in messages}
    duration: int = stamps["execution_success"] - stamps["execution_start"]
    return duration


def loaded(comfy: Comfy) -> tuple[int, str | None]:
    stats = comfy.stats()
    return stats["model_loads"], stats["loaded_model"]


def test_load_time_is_paid_by_the_first_prompt_and_by_switches_only(slow: Comfy) -> None:
    assert loaded(slow) == (0, None)  # a fake starts with nothing loaded
    assert LOAD_MS - 1 <= duration_ms(slow, checkpoint("sd15.safetensors")) < LOAD_MS + SLACK_MS
    assert loaded(slow) == (1, "checkpoints/sd15.safetensors")
    assert duration_ms(slow, checkpoint("sd15.safetensors", seed=2)) < LOAD_MS
    assert LOAD_MS - 1 <= duration_ms(slow, checkpoint("sdxl.safetensors")) < LOAD_MS + SLACK_MS
    assert LOAD_MS - 1 <= duration_ms(slow, unet("flux.safetensors")) < LOAD_MS + SLACK_MS
    assert duration_ms(slow, unet("flux.safetensors")) < LOAD_MS
    assert loaded(slow) == (3, "diffusion_models/flux.safetensors")


def test_other_loaders_take_no_load_time(tmp_path: Path) -> None:
    models = {"vae": ("ae.safetensors",)}
    config = FakeConfig(port=0, output_dir=str(tmp_path), models=models, model_load_seconds=LOAD)
    with BackgroundFake(config) as fake:
        client = Comfy(fake)
        try:
            graph = {
                "1": {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}},
                "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
            }
            assert duration_ms(client, graph) < LOAD_MS
            assert loaded(client) == (0, None)
        finally:
            client.close()


def test_the_load_comes_on_top_of_exec_seconds(slow: Comfy) -> None:
    slow.control(exec_seconds=0.2)
    assert LOAD_MS + 200 - 1 <= duration_ms(slow, checkpoint("sd15.safetensors")) < LOAD_MS + 200 + SLACK_MS
    assert 200 - 1 <= duration_ms(slow, checkpoint("sd15.safetensors")) < LOAD_MS


def test_the_loader_node_is_executing_while_the_model_loads(slow: Comfy) -> None:
    client_id = str(uuid.uuid4())
    ws, _ = slow.connect(client_id)
    prompt_id = slow.submit(checkpoint("sd15.safetensors"), client_id).json()["prompt_id"]
    frames = wait_for(ws, "executing", node="4")
    assert [f["type"] for f in frames][-4:] == ["execution_start", "execution_cached", "progress_state", "executing"]
    began = time.monotonic()
    after = recv_json(ws)
    assert time.monotonic() - began >= LOAD - 0.05  # the next frame waits for the load
    assert after["type"] == "progress_state" and after["data"]["nodes"]["4"]["state"] == "finished"
    assert frames_until_idle(ws, prompt_id)[-3]["type"] == "execution_success"


def test_an_interrupt_during_a_load_ends_the_prompt_once_the_model_is_loaded(slow: Comfy) -> None:
    client_id = str(uuid.uuid4())
    ws, _ = slow.connect(client_id)
    prompt_id = slow.submit(checkpoint("sd15.safetensors"), client_id).json()["prompt_id"]
    wait_for(ws, "executing", node="4")
    began = time.monotonic()
    slow.post("/interrupt")
    end = frames_until_idle(ws, prompt_id)[-3]
    assert time.monotonic() - began >= LOAD - 0.1  # ComfyUI does not stop a load half-way
    # Blamed on the loader once it returns, as the recorded ImageBlur (slow_interrupted.json) is.
    assert end["type"] == "execution_interrupted"
    assert (end["data"]["node_id"], end["data"]["executed"]) == ("4", [])
    assert loaded(slow) == (1, "checkpoints/sd15.safetensors")


@pytest.mark.parametrize(
    ("body", "unloads"),
    [({"unload_models": True}, True), ({"free_memory": True}, True), ({"unload_models": False}, False),
     ({"unload_models": False, "free_memory": True}, True), ({}, False)],
)  # fmt: skip
def test_free_unloads_and_the_next_prompt_loads_again(slow: Comfy, body: dict[str, Any], unloads: bool) -> None:
    duration_ms(slow, checkpoint("sd15.safetensors"))
    assert slow.post("/free", json=body).status_code == 200
    assert loaded(slow) == (1, None if unloads else "checkpoints/sd15.safetensors")
    took = duration_ms(slow, checkpoint("sd15.safetensors"))
    assert (took >= LOAD_MS - 1) is unloads
    assert loaded(slow) == (2 if unloads else 1, "checkpoints/sd15.safetensors")


def test_free_while_a_prompt_runs_unloads_once_it_ends(slow: Comfy) -> None:
    duration_ms(slow, checkpoint("sd15.safetensors"))
    slow.control(exec_seconds=0.4)
    client_id = str(uuid.uuid4())
    ws, _ = slow.connect(client_id)
    prompt_id = slow.submit(checkpoint("sd15.safetensors"), client_id).json()["prompt_id"]
    wait_for(ws, "executing", node="3")
    assert slow.post("/api/free", json={"unload_models": True}).status_code == 200
    assert loaded(slow) == (1, "checkpoints/sd15.safetensors")  # the running prompt keeps its model
    assert frames_until_idle(ws, prompt_id)[-3]["type"] == "execution_success"
    assert loaded(slow) == (1, None)


def test_free_needs_a_json_body(slow: Comfy) -> None:
    assert slow.post("/free", data=b"nope").status_code == 500


@pytest.mark.parametrize(("exception_type", "unloads"), [("torch.OutOfMemoryError", True), ("RuntimeError", False)])
def test_out_of_memory_unloads_as_comfyui_does(slow: Comfy, exception_type: str, unloads: bool) -> None:
    slow.control(fail_node_type="KSampler", exception_type=exception_type, fail_times=1)
    _, frames = slow.run(checkpoint("sd15.safetensors"))
    assert frames[-3]["type"] == "execution_error"
    assert loaded(slow) == (1, None if unloads else "checkpoints/sd15.safetensors")


def test_reset_unloads_and_zeroes_the_count(slow: Comfy) -> None:
    duration_ms(slow, checkpoint("sd15.safetensors"))
    assert slow.post("/fake/reset").status_code == 200
    assert loaded(slow) == (0, None)
    assert duration_ms(slow, checkpoint("sd15.safetensors")) >= LOAD_MS - 1


def test_a_negative_load_time_is_refused() -> None:
    fake = BackgroundFake(FakeConfig(port=0, model_load_seconds=-1))
    try:
        with pytest.raises(ValueError, match="model_load_seconds must be >= 0"):
            fake.start()
    finally:
        fake.stop()
