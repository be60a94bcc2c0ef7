"""Model-aware routing's worker side through real processes: a worker publishes what its fake ComfyUI has, the API
shows it, and the worker reports the checkpoint its runs load (and counts switches between them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests
from redis import Redis

from dispatcher.routing.store import CapabilityStore
from tests.e2e.helpers import wait_until
from tests.support_stack import LocalStack, submit

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

MODELS = {"checkpoints": ["a.safetensors", "c.safetensors"]}


def only_worker(session: requests.Session, api: str) -> dict[str, Any]:
    (worker,) = session.get(f"{api}/v1/workers", timeout=10).json()["workers"]
    assert isinstance(worker, dict)
    return worker


def run_txt2img(session: requests.Session, api: str, checkpoint: str) -> None:
    body = {"params": {"prompt": "a cat", "checkpoint": checkpoint, "steps": 1, "width": 64, "height": 64}}
    run_id = submit(session, api, "txt2img", body)
    run = session.get(f"{api}/v1/runs/{run_id}?wait=30", timeout=40).json()
    assert run["status"] == "succeeded", run


def switches(port: int) -> float:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    (line,) = [line for line in text.splitlines() if line.startswith("comfy_dispatch_model_switches_total ")]
    return float(line.split()[1])


def ready_worker(session: requests.Session, api: str) -> dict[str, Any]:
    worker: dict[str, Any] = wait_until(
        lambda: (w := only_worker(session, api))["capabilities"] and w["state"] == "idle" and w,
        "the worker never published what its ComfyUI can run",
    )
    return worker


def test_a_worker_publishes_what_its_comfyui_has_and_the_api_shows_it(redis_url: str, tmp_path: Path) -> None:
    with LocalStack(redis_url, tmp_path, workers=1, fake_models=[MODELS]) as stack:
        session = requests.Session()
        worker = ready_worker(session, stack.api)
        assert worker["models"] == {"checkpoints": 2}, stack.logs()
        assert worker["nodes"] > 10 and worker["checkpoint"] is None
        redis = Redis.from_url(redis_url, decode_responses=True)
        caps = CapabilityStore(redis, ttl_seconds=30).get_many([worker["capabilities"]])[worker["capabilities"]]
        assert caps.models["checkpoints"] == {"a.safetensors", "c.safetensors"}
        assert {"CheckpointLoaderSimple", "KSampler", "SaveImage"} <= caps.nodes

        # txt2img's defaults load SD 1.5, which this fleet lacks; invert needs no model.
        workflows = {w: session.get(f"{stack.api}/v1/workflows/{w}", timeout=10).json() for w in ("txt2img", "invert")}
        assert workflows["txt2img"]["capable_workers"] == 0 and workflows["invert"]["capable_workers"] == 1


def test_a_worker_reports_the_checkpoint_its_runs_load(redis_url: str, tmp_path: Path) -> None:
    with LocalStack(redis_url, tmp_path, workers=1, fake_models=[MODELS]) as stack:
        session = requests.Session()
        ready_worker(session, stack.api)
        port = stack.worker_metrics_ports[0]
        run_txt2img(session, stack.api, "a.safetensors")
        wait_until(
            lambda: only_worker(session, stack.api)["checkpoint"] == "checkpoints/a.safetensors",
            "the worker never reported the checkpoint of its run",
        )
        assert switches(port) == 0  # the first model loaded is no switch
        run_txt2img(session, stack.api, "c.safetensors")
        wait_until(
            lambda: only_worker(session, stack.api)["checkpoint"] == "checkpoints/c.safetensors",
            "the worker never reported the new checkpoint",
        )
        assert switches(port) == 1
