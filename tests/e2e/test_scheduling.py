"""Scheduling through real processes: strict priority, and round-robin fairness between tenants."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests
from redis import Redis

from dispatcher.apikeys import ApiKeyStore
from dispatcher.runs import RunStore
from dispatcher.settings import load_settings
from dispatcher.tenants import TenantStore
from tests.faults.helpers import Completions
from tests.support_stack import LocalStack, submit

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

BODY = {"params": {"width": 8, "height": 8}}


def test_every_high_run_starts_before_any_low_run(redis_url: str, tmp_path: Path) -> None:
    done = Completions(redis_url)
    with LocalStack(redis_url, tmp_path, workers=2, exec_seconds=0.05, start_workers=False) as stack:
        session = requests.Session()
        low = {submit(session, stack.api, "invert", BODY | {"priority": "low"}) for _ in range(20)}
        high = {submit(session, stack.api, "invert", BODY | {"priority": "high"}) for _ in range(20)}
        stack.start_all_workers()  # the workers were "paused": nothing could start before this
        done.wait_for(low | high, 120)
        assert set(done.status.values()) == {"succeeded"}, stack.logs()
        store = RunStore(Redis.from_url(redis_url, decode_responses=True))
        started = {run_id: store.get(run_id).started_at for run_id in low | high}  # type: ignore[union-attr]
        last_high = max(started[r] for r in high)  # type: ignore[type-var]
        first_low = min(started[r] for r in low)  # type: ignore[type-var]
        print(f"\npriority: last high run started {first_low - last_high:.3f}s before the first low one")  # type: ignore[operator]
        assert last_high < first_low  # type: ignore[operator]
    done.close()


def test_a_small_tenant_is_not_starved_by_a_big_batch(redis_url: str, tmp_path: Path) -> None:
    redis = Redis.from_url(redis_url, decode_responses=True)
    tenants = TenantStore(redis, load_settings({}))
    keys = {}
    for name in ("a", "b"):
        tenants.set(name, submit_rate=100_000, submit_burst=100_000)
        keys[name] = ApiKeyStore(redis).create(name, "submit,read")[1]
    done = Completions(redis_url)
    env = {"COMFY_DISPATCH_AUTH": "enabled"}
    with LocalStack(redis_url, tmp_path, workers=2, exec_seconds=0.05, env=env) as stack:
        a, b = requests.Session(), requests.Session()
        a.headers["X-API-KEY"], b.headers["X-API-KEY"] = keys["a"], keys["b"]
        runs_a = {submit(a, stack.api, "invert", BODY) for _ in range(500)}
        done.settle(0.1)  # take in what already ended
        a_done_before = len(set(done.ended) & runs_a)
        runs_b = {submit(b, stack.api, "invert", BODY) for _ in range(10)}
        done.wait_for(runs_b, 60)
        a_done_meanwhile = len(set(done.ended) & runs_a) - a_done_before
        print(f"\nfairness: tenant a finished {a_done_before} of 500 before b queued its 10, "
              f"and {a_done_meanwhile} more until b's 10 had all finished")  # fmt: skip
        assert set(done.ended) >= runs_b and {done.status[r] for r in runs_b} == {"succeeded"}, stack.logs()
        assert a_done_before < 400, "a's batch must still be queued when b arrives, or the test shows nothing"
        assert a_done_meanwhile < 100
    done.close()


def test_a_run_waiting_behind_a_slow_one_moves_to_a_worker_that_idles(redis_url: str, tmp_path: Path) -> None:
    """Two workers: A executes a slow run with a quick one posted behind it (its pipeline), B finishes its own
    quick run and idles. The scheduler asks A for the waiting run back; it moves to B and ends seconds before
    the slow one, instead of waiting it out. It ran once, on B, and used no attempt to move."""
    done = Completions(redis_url)
    with LocalStack(redis_url, tmp_path, workers=2) as stack:
        session = requests.Session()
        redis = Redis.from_url(redis_url, decode_responses=True)
        store = RunStore(redis)
        slow = submit(session, stack.api, "blur-slow", {"params": {"blur_radius": 31}})
        deadline = time.monotonic() + 30
        while (run := store.get(slow)) is None or run.status != "running":
            assert time.monotonic() < deadline, stack.logs()
            time.sleep(0.02)
        quick, behind = (submit(session, stack.api, "invert", BODY) for _ in range(2))
        done.wait_for({slow, quick, behind}, 60)
        done.settle(1)
        runs = {run_id: store.get(run_id) for run_id in (slow, quick, behind)}
        assert set(done.status.values()) == {"succeeded"} and set(done.ended.values()) == {1}, stack.logs()
        first, moved, last = runs[quick], runs[behind], runs[slow]
        assert first and moved and last and last.finished_at and moved.finished_at
        events = [fields for _, fields in redis.xrange(f"cd:run:{behind}:events")]
        handed_back = any(e["type"] == "queued" and "handed_back" in e["data"] for e in events)
        print(f"\nrebalancing: the run behind the slow one {'was' if handed_back else 'was not'} asked back; it "
              f"ended {last.finished_at - moved.finished_at:.1f}s before the slow one, on "
              f"{'the other' if moved.comfyui_url != last.comfyui_url else 'the same'} ComfyUI")  # fmt: skip
        assert handed_back, "posted behind the slow run (RQ serves the worker blocked longest), then asked back"
        assert moved.comfyui_url != last.comfyui_url, "it ran on the idle worker's ComfyUI"
        assert last.finished_at - moved.finished_at > 1.5, "it did not wait out the slow run"
        assert moved.attempts == 1
        executed = {f.url: f.stats()["prompts"] for f in stack.fakes}
        assert sum(p.get(moved.prompt_id, 0) for p in executed.values()) == 1  # type: ignore[attr-defined]
    done.close()
