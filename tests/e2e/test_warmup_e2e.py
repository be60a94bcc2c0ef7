"""Warm-up through real processes: a worker runs its warm-up workflow on its ComfyUI before it takes runs (so the
first run pays no model load), and a warm-up that fails keeps it out of the fleet with the reason visible."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support_stack import LocalStack, submit

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

HOLDS_A = {"checkpoints": ["a.safetensors"]}


def txt2img(checkpoint: str) -> dict[str, Any]:
    return {"prompt": "warm", "checkpoint": checkpoint, "steps": 1, "width": 64, "height": 64}


def warmup_env(checkpoint: str) -> dict[str, str]:
    return {
        "COMFY_DISPATCH_WARMUP_WORKFLOW": "txt2img",
        "COMFY_DISPATCH_WARMUP_PARAMS": json.dumps(txt2img(checkpoint)),
    }


def worker_view(api: str) -> dict[str, Any]:
    (worker,) = requests.get(f"{api}/v1/workers", timeout=10).json()["workers"]
    assert isinstance(worker, dict)
    return worker


def test_the_first_run_after_a_warm_up_loads_no_model(redis_url: str, tmp_path: Path) -> None:
    stack = LocalStack(
        redis_url, tmp_path, workers=1, env=warmup_env("a.safetensors"), fake_models=[HOLDS_A], model_load_seconds=1.0
    )
    with stack:
        (fake,) = stack.fakes
        states = set()
        deadline = time.monotonic() + 30
        while (state := worker_view(stack.api)["state"]) != "idle" and time.monotonic() < deadline:
            states.add(state)
            time.sleep(0.05)
        assert state == "idle" and "warming" in states, states  # warming while the checkpoint loaded
        assert fake.stats()["model_loads"] == 1 and fake.stats()["executed"] == 1
        session = requests.Session()
        run_id = submit(session, stack.api, "txt2img", {"params": txt2img("a.safetensors")})
        run = session.get(f"{stack.api}/v1/runs/{run_id}?wait=30", timeout=40).json()
        assert run["status"] == "succeeded", run
        assert fake.stats()["model_loads"] == 1  # the run found its checkpoint loaded


def test_a_failed_warm_up_keeps_the_worker_out_with_its_reason(redis_url: str, tmp_path: Path) -> None:
    with LocalStack(redis_url, tmp_path, workers=1, env=warmup_env("z.safetensors"), fake_models=[HOLDS_A]) as stack:
        deadline = time.monotonic() + 30
        while not (worker := worker_view(stack.api))["warmup_error"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert worker["state"] == "warming" and "z.safetensors" in worker["warmup_error"], worker
        session = requests.Session()
        run_id = submit(session, stack.api, "invert", {"params": {"width": 8, "height": 8}})
        time.sleep(1.5)  # a ready worker would have run it by now
        assert session.get(f"{stack.api}/v1/runs/{run_id}", timeout=10).json()["status"] == "queued"
        assert stack.fakes[0].stats()["executed"] == 0
