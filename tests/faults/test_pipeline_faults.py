"""Real processes with full pipelines (a run executing on each ComfyUI, the next one posted behind it): killed
workers, a killed ComfyUI, a cancel of a run waiting in ComfyUI's queue, a time limit behind a slow run. Every
accepted run ends exactly once, and none is lost.

Each test prints what it counted (run with -s to see it).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import requests
from redis import Redis

from dispatcher.runs import Run, RunStore
from tests.faults.helpers import Completions
from tests.faults.test_faults import FAST
from tests.support import FakeComfy
from tests.support_stack import LocalStack, submit

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

INVERT = {"params": {"width": 8, "height": 8}}


def full_pipeline(fake: FakeComfy, timeout: float = 30) -> dict[str, Any]:
    """Wait until the fake runs a prompt and has the next one queued behind it; its /queue then."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        queue: dict[str, Any] = requests.get(f"{fake.url}/queue", timeout=5).json()
        if queue["queue_running"] and queue["queue_pending"]:
            return queue
        time.sleep(0.02)
    raise TimeoutError("the worker never had a run executing and the next one posted")


def runs_of(redis: Redis, run_ids: set[str]) -> dict[str, Run]:
    store = RunStore(redis)
    return {run_id: run for run_id in run_ids if (run := store.get(run_id)) is not None}


def test_sigkill_of_a_worker_holding_a_full_pipeline(redis_url: str, tmp_path: Path) -> None:
    """The dead worker's runs are retried; on the same ComfyUI each retry finds its prompt there (queued or
    done: its /queue and /history) and takes it over, so no prompt executes twice. The new worker has another
    name, so ComfyUI sends it none of those prompts' events: it asks /history as ComfyUI's queue moves."""
    done = Completions(redis_url)
    with LocalStack(redis_url, tmp_path, workers=1, exec_seconds=1.0, env=FAST) as stack:
        (fake,) = stack.fakes
        session = requests.Session()
        runs = {submit(session, stack.api, "invert", INVERT) for _ in range(5)}
        queue = full_pipeline(fake)
        held = {item[1] for item in queue["queue_running"] + queue["queue_pending"]}
        stack.workers[0].kill()
        stack.workers[0] = stack.start_worker(0, name="w0-reborn")
        done.wait_for(runs, 90)
        done.settle(2)
        redis = Redis.from_url(redis_url, decode_responses=True)
        found = runs_of(redis, runs)
        victims = {run_id for run_id, run in found.items() if run.prompt_id in held}
        executions: dict[str, int] = fake.stats()["prompts"]  # type: ignore[assignment]
        attempts = sorted(found[v].attempts for v in victims)
        print(f"\nSIGKILL of a full pipeline: {len(done.ended)}/{len(runs)} ended, statuses "
              f"{set(done.status.values())}, max completions per run {max(done.ended.values())}, "
              f"{len(victims)} runs held by the dead worker, their attempts {attempts}, "
              f"executions per prompt {set(executions.values())}")  # fmt: skip
        assert set(done.ended) == runs, stack.logs()
        assert set(done.ended.values()) == {1}, "a run ended twice"
        assert set(done.status.values()) == {"succeeded"}, stack.logs()
        assert len(victims) == 2 and all(found[v].attempts == 2 for v in victims)
        assert {found[r].prompt_id for r in runs} == set(executions) and set(executions.values()) == {1}
    done.close()


def test_comfyui_killed_with_prompts_posted(redis_url: str, tmp_path: Path) -> None:
    """Both runs the worker held fail over to a retry (transient), and both end once on the restarted ComfyUI."""
    done = Completions(redis_url)
    with LocalStack(redis_url, tmp_path, workers=1, exec_seconds=2.0, env=FAST) as stack:
        (fake,) = stack.fakes
        session = requests.Session()
        runs = {submit(session, stack.api, "invert", INVERT) for _ in range(4)}
        queue = full_pipeline(fake)
        held = {item[1] for item in queue["queue_running"] + queue["queue_pending"]}
        fake.kill()
        time.sleep(1.0)  # down long enough for the worker to notice and pause
        reborn = FakeComfy(tmp_path / "fake-reborn", exec_seconds=0.2, port=fake.port).start()
        stack.fakes.append(reborn)
        done.wait_for(runs, 90)
        done.settle(2)
        found = runs_of(Redis.from_url(redis_url, decode_responses=True), runs)
        victims = {run_id for run_id, run in found.items() if run.prompt_id in held}
        print(f"\nComfyUI killed with a full pipeline: {len(done.ended)}/{len(runs)} ended, statuses "
              f"{set(done.status.values())}, {len(victims)} held runs, their attempts "
              f"{sorted(found[v].attempts for v in victims)}, executed on the restarted fake "
              f"{reborn.stats()['executed']}")  # fmt: skip
        assert set(done.ended) == runs, stack.logs()
        assert set(done.ended.values()) == {1}
        assert set(done.status.values()) == {"succeeded"}, stack.logs()
        assert len(victims) == 2 and all(found[v].attempts == 2 for v in victims)
        assert reborn.stats()["executed"] == len(runs)
    done.close()


def test_cancel_of_a_run_waiting_in_comfyuis_queue(redis_url: str, tmp_path: Path) -> None:
    done = Completions(redis_url)
    with LocalStack(redis_url, tmp_path, workers=1, exec_seconds=1.5, env=FAST) as stack:
        (fake,) = stack.fakes
        session = requests.Session()
        first = submit(session, stack.api, "invert", INVERT)
        second = submit(session, stack.api, "invert", INVERT)
        queue = full_pipeline(fake)
        waiting = queue["queue_pending"][0][1]
        redis = Redis.from_url(redis_url, decode_responses=True)
        run = runs_of(redis, {second})[second]
        assert run.prompt_id == waiting, "the second run waits behind the first in ComfyUI's queue"
        canceled = session.post(f"{stack.api}/v1/runs/{second}/cancel", timeout=15)
        assert canceled.status_code == 200 and canceled.json()["status"] == "canceled", canceled.text
        assert requests.get(f"{fake.url}/queue", timeout=5).json()["queue_pending"] == []
        done.wait_for({first, second}, 30)
        done.settle(2)
        stats = fake.stats()
        print(f"\ncancel of a run queued in ComfyUI: statuses {done.status}, its prompt executed "
              f"{stats['prompts'].get(waiting, 0)} time(s), interrupts {stats['interrupted']}")  # fmt: skip
        assert done.status == {first: "succeeded", second: "canceled"} and set(done.ended.values()) == {1}
        assert waiting not in stats["prompts"] and stats["interrupted"] == 0
    done.close()


def test_a_time_limit_behind_a_slow_run(redis_url: str, tmp_path: Path) -> None:
    """A run with a 1 s limit waits ~3 s behind a slow one, then executes: it succeeds, its clock having started
    when ComfyUI started it. A slow run with the same limit, behind it, is interrupted 1 s into its own run."""
    done = Completions(redis_url)
    with LocalStack(redis_url, tmp_path, workers=1, env=FAST | {"COMFY_DISPATCH_PIPELINE_DEPTH": "3"}) as stack:
        (fake,) = stack.fakes
        session = requests.Session()
        slow = submit(session, stack.api, "blur-slow", {"params": {"blur_radius": 31}})
        quick = submit(session, stack.api, "invert", INVERT | {"timeout_seconds": 1})
        too_slow = submit(session, stack.api, "blur-slow", {"params": {"blur_radius": 31}, "timeout_seconds": 1})
        done.wait_for({slow, quick, too_slow}, 60)
        done.settle(2)
        found = runs_of(Redis.from_url(redis_url, decode_responses=True), {slow, quick, too_slow})
        held_for = (found[quick].finished_at or 0) - (found[quick].started_at or 0)
        print(f"\ntime limits behind a slow run: {done.status}; the quick run, limit 1 s, was held {held_for:.1f}s "
              f"and ran {found[quick].gpu_seconds:.3f}s")  # fmt: skip
        assert done.status == {slow: "succeeded", quick: "succeeded", too_slow: "failed"}, stack.logs()
        assert held_for > 1.5 and found[quick].gpu_seconds < 0.5, stack.logs()
        assert set(done.ended.values()) == {1}
        error = found[too_slow].error
        assert error is not None and error["type"] == "RunTimeout"
        assert found[too_slow].gpu_seconds == pytest.approx(1.0, abs=0.5)
        assert fake.stats()["interrupted"] == 1
    done.close()
