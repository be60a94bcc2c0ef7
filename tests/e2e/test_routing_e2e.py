"""Routing by capability through real processes: four fakes, two holding checkpoint ``a`` and two ``b`` (all ``c``);
runs over the three go only to a worker whose ComfyUI holds theirs, none fails or is retried for a missing model,
and a run needing a checkpoint no worker has is refused at submit, naming it, with nothing queued."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import requests
from redis import Redis

from dispatcher import keys
from dispatcher.runs import RunStore
from tests.support_stack import LocalStack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

HOLDS_A = {"checkpoints": ["a.safetensors", "c.safetensors"]}
HOLDS_B = {"checkpoints": ["b.safetensors", "c.safetensors"]}
CHECKPOINTS = ("a.safetensors", "b.safetensors", "c.safetensors")
RUNS = 400


def txt2img(checkpoint: str) -> dict[str, Any]:
    return {"params": {"prompt": "a cat", "checkpoint": checkpoint, "steps": 1, "width": 64, "height": 64}}


def wait_for_sets(api: str, count: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        workers = requests.get(f"{api}/v1/workers", timeout=10).json()["workers"]
        if len([w for w in workers if w["capabilities"] and w["health"] == "healthy"]) == count:
            return
        time.sleep(0.2)
    raise AssertionError(f"workers did not publish their capability sets: {workers}")


def test_runs_go_only_to_workers_that_hold_their_checkpoint(redis_url: str, tmp_path: Path) -> None:
    fleet = [HOLDS_A, HOLDS_A, HOLDS_B, HOLDS_B]
    with LocalStack(redis_url, tmp_path, workers=4, fake_models=fleet) as stack:
        wait_for_sets(stack.api, 4)
        holds = {fake.url: set(models["checkpoints"]) for fake, models in zip(stack.fakes, fleet, strict=True)}

        # Refused at submit: no worker holds z (422 naming the file and its folder), nothing queued.
        refused = requests.post(f"{stack.api}/v1/workflows/txt2img/runs", json=txt2img("z.safetensors"), timeout=10)
        assert refused.status_code == 422, refused.text
        problem = refused.json()
        assert "missing" in problem, problem
        assert problem["missing"] == [{"name": "z.safetensors", "folder": "checkpoints"}], problem
        assert "z.safetensors" in problem["detail"] and "checkpoints" in problem["detail"]

        # 300 through the batch route, 100 one by one (their own submit-and-take path).
        wanted = [CHECKPOINTS[i % 3] for i in range(RUNS)]
        items = [{"workflow": "txt2img", **txt2img(c)} for c in wanted[:300]]
        batch = requests.post(f"{stack.api}/v1/runs/batch", json={"runs": items}, timeout=60).json()
        assert batch["accepted"] == 300, batch["items"][:3]
        ids = [item["run"]["id"] for item in batch["items"]]
        session = requests.Session()
        for checkpoint in wanted[300:]:
            reply = session.post(f"{stack.api}/v1/workflows/txt2img/runs", json=txt2img(checkpoint), timeout=10)
            assert reply.status_code == 202, reply.text
            ids.append(reply.json()["id"])

        redis = Redis.from_url(redis_url, decode_responses=True)
        store = RunStore(redis)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            runs = [store.get(i) for i in ids]
            if all(r is not None and r.status.terminal for r in runs):
                break
            time.sleep(0.5)
        runs = [store.get(i) for i in ids]
        assert all(r is not None for r in runs)
        statuses = {r.status.value for r in runs if r is not None}
        assert statuses == {"succeeded"}, [(r.id, r.status, r.error) for r in runs if r and r.status != "succeeded"][:3]
        for run, checkpoint in zip(runs, wanted, strict=True):
            assert run is not None and run.attempts == 1, (run.id, run.attempts, run.error)
            assert checkpoint in holds[run.comfyui_url], (run.id, checkpoint, run.comfyui_url)
        # No fake refused a prompt.
        assert all(fake.stats()["failed"] == 0 for fake in stack.fakes)
        assert sum(fake.stats()["executed"] for fake in stack.fakes) == RUNS
        assert redis.zcard(keys.INFLIGHT) == 0


def test_a_run_kept_queued_for_a_capable_worker_says_what_it_waits_for(redis_url: str, tmp_path: Path) -> None:
    env = {"COMFY_DISPATCH_UNSERVABLE_RUNS": "queue"}
    with LocalStack(redis_url, tmp_path, workers=1, fake_models=[HOLDS_A], env=env) as stack:
        wait_for_sets(stack.api, 1)
        reply = requests.post(f"{stack.api}/v1/workflows/txt2img/runs", json=txt2img("z.safetensors"), timeout=10)
        assert reply.status_code == 202, reply.text
        time.sleep(1.0)  # a worker that could would have taken it
        run = requests.get(f"{stack.api}/v1/runs/{reply.json()['id']}", timeout=10).json()
        assert run["status"] == "queued" and run["waiting_for"] == [{"name": "z.safetensors", "folder": "checkpoints"}]
        queues = requests.get(f"{stack.api}/v1/queues", timeout=10).json()
        assert queues["total"] == 1 and queues["waiting_for_capability"] == 1, queues
        metrics = requests.get(f"{stack.api}/metrics", timeout=10).text
        assert "comfy_dispatch_runs_waiting_for_capability 1.0" in metrics
        served = requests.post(
            f"{stack.api}/v1/workflows/txt2img/runs?wait=30", json=txt2img("a.safetensors"), timeout=40
        )
        assert served.json()["status"] == "succeeded" and served.json()["waiting_for"] is None
