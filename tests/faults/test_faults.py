"""Real processes killed mid-run: every accepted run still ends exactly once.

Each test prints what it counted (run with -s to see it).
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import requests
from redis import Redis

from dispatcher.redis_server import RedisServer, find_redis_binary
from dispatcher.runs import RunStore
from tests.faults.helpers import Completions
from tests.support import FakeComfy
from tests.support_stack import LocalStack, submit

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

FAST = {
    "COMFY_DISPATCH_LEASE_SECONDS": "3",
    "COMFY_DISPATCH_WORKER_HEARTBEAT": "0.5",
    "COMFY_DISPATCH_RETRY_BASE": "0.2",
    "COMFY_DISPATCH_COMFYUI_TIMEOUT": "2",
}


def _running_on(redis: Redis, worker: str, deadline: float) -> str:
    store = RunStore(redis)
    while time.monotonic() < deadline:
        for name in redis.scan_iter("cd:run:*"):
            if name.count(":") != 2:
                continue
            run = store.get(name.split(":")[2])
            if run is not None and run.status == "running" and run.worker == worker:
                return run.id
        time.sleep(0.05)
    raise TimeoutError(f"no run started on {worker}")


def test_sigkill_of_a_worker_mid_run(redis_url: str, tmp_path: Path) -> None:
    done = Completions(redis_url)
    with LocalStack(redis_url, tmp_path, workers=2, exec_seconds=1.0, env=FAST) as stack:
        session = requests.Session()
        runs = {submit(session, stack.api, "invert", {"params": {"width": 8, "height": 8}}) for _ in range(12)}
        redis = Redis.from_url(redis_url, decode_responses=True)
        victim = _running_on(redis, f"w0-{stack.fakes[0].port}", time.monotonic() + 30)
        stack.workers[0].process.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
        killed_at, killed_wall = time.monotonic(), time.time()
        done.wait_for(runs, 90)
        recovered_in = time.monotonic() - killed_at
        done.settle(2)
        store = RunStore(redis)
        victim_run = store.get(victim)
        assert victim_run is not None and victim_run.started_at is not None
        print(f"\nSIGKILL worker: {len(done.ended)}/{len(runs)} ended, statuses {set(done.status.values())}, "
              f"max completions per run {max(done.ended.values())}, victim attempts {victim_run.attempts}, "
              f"victim restarted {victim_run.started_at - killed_wall:.1f}s after the kill (lease 3s), "
              f"all done {recovered_in:.1f}s after it")  # fmt: skip
        assert set(done.ended) == runs, stack.logs()
        assert set(done.ended.values()) == {1}, "a run ended twice"
        assert set(done.status.values()) == {"succeeded"}, stack.logs()
        assert victim_run.attempts == 2 and victim_run.worker == ""
        assert victim_run.started_at - killed_wall < 3 + 1 + 1 + 2  # lease + reap interval + backoff + slack
    done.close()


def test_comfyui_killed_mid_run_and_restarted(redis_url: str, tmp_path: Path) -> None:
    done = Completions(redis_url)
    with LocalStack(redis_url, tmp_path, workers=1, exec_seconds=2.0, env=FAST) as stack:
        (fake,) = stack.fakes
        session = requests.Session()
        run_id = submit(session, stack.api, "invert", {"params": {"width": 8, "height": 8}})
        redis = Redis.from_url(redis_url, decode_responses=True)
        _running_on(redis, f"w0-{fake.port}", time.monotonic() + 30)
        fake.kill()
        time.sleep(1.0)  # down long enough for the worker to notice and pause
        reborn = FakeComfy(tmp_path / "fake-reborn", exec_seconds=0.2, port=fake.port).start()
        stack.fakes.append(reborn)
        done.wait_for({run_id}, 60)
        done.settle(2)
        run = RunStore(redis).get(run_id)
        executed = reborn.stats()["executed"]
        print(f"\nComfyUI crash: run ended {done.ended[run_id]} time(s) as {done.status.get(run_id)}, "
              f"attempts {run.attempts if run else '?'}, executions on the restarted fake {executed}")  # fmt: skip
        assert done.ended[run_id] == 1 and done.status[run_id] == "succeeded", stack.logs()
        assert run is not None and run.attempts == 2
        assert executed == 1
    done.close()


def test_redis_restart_with_queued_runs_loses_none(tmp_path: Path) -> None:
    server = RedisServer(data_dir=tmp_path / "redis", appendonly=True).start(find_redis_binary())
    try:
        with LocalStack(server.url, tmp_path, workers=2, exec_seconds=0.02, env=FAST, start_workers=False) as stack:
            session = requests.Session()
            before = {submit(session, stack.api, "invert", {"params": {"width": 8, "height": 8}}) for _ in range(40)}
            server.stop()  # SIGTERM: Redis finishes its AOF and exits
            server.start(find_redis_binary())
            done = Completions(server.url)
            stack.start_all_workers()
            after = set()
            deadline = time.monotonic() + 20
            while len(after) < 10 and time.monotonic() < deadline:  # the API reconnects by itself
                try:
                    after.add(submit(session, stack.api, "invert", {"params": {"width": 8, "height": 8}}))
                except (AssertionError, requests.RequestException):
                    time.sleep(0.2)
            done.wait_for(before | after, 90)
            done.settle(1)
            first = len(set(done.ended) & before)
            print(f"\nRedis restart: {len(before)} accepted before, {len(after)} after; "
                  f"{first} of the first ended, statuses {set(done.status.values())}")  # fmt: skip
            assert set(done.ended) == before | after, stack.logs()
            assert set(done.ended.values()) == {1}
            assert set(done.status.values()) == {"succeeded"}
            done.close()
    finally:
        server.stop()
