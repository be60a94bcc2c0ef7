"""A worker SIGKILLed and started again at once under its own name: it clears what its dead earlier life left
registered (RQ's worker record, our fleet entry) and takes runs; a second live worker with that name is refused.

Each test prints what it counted (run with -s to see it).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests
from redis import Redis

from dispatcher import keys
from tests.faults.helpers import Completions
from tests.faults.test_faults import FAST, _running_on
from tests.support import Proc
from tests.support_stack import LocalStack, submit

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

INVERT = {"params": {"width": 8, "height": 8}}


def _wait_for_runs_or_exit(done: Completions, runs: set[str], worker: Proc, timeout: float) -> None:
    """Wait for ``runs`` to end, or for ``worker`` to exit (then there is no point waiting on)."""
    deadline = time.monotonic() + timeout
    while not runs <= set(done.ended) and time.monotonic() < deadline:
        if worker.process is not None and worker.process.poll() is not None:
            return
        done.poll(0.5)


def test_a_worker_sigkilled_mid_run_starts_again_at_once_under_its_name(redis_url: str, tmp_path: Path) -> None:
    done = Completions(redis_url)
    with LocalStack(redis_url, tmp_path, workers=1, exec_seconds=0.5, env=FAST) as stack:
        name = stack.worker_name(0)
        session = requests.Session()
        redis = Redis.from_url(redis_url, decode_responses=True)
        first = {submit(session, stack.api, "invert", INVERT) for _ in range(3)}
        _running_on(redis, name, time.monotonic() + 30)
        stack.workers[0].kill()  # SIGKILL: no RQ death record, our fleet entry left to expire
        assert redis.exists(f"rq:worker:{name}") and not redis.hexists(f"rq:worker:{name}", "death")
        restarted_at = time.monotonic()
        stack.workers[0] = reborn = stack.start_worker(0)  # the same name, at once
        second = {submit(session, stack.api, "invert", INVERT) for _ in range(3)}
        _wait_for_runs_or_exit(done, first | second, reborn, 60)
        took = time.monotonic() - restarted_at
        done.settle(1)
        print(f"\nworker SIGKILLed and restarted under its name: {len(done.ended)}/{len(first | second)} ended "
              f"{took:.1f}s after the restart, statuses {set(done.status.values())}")  # fmt: skip
        assert reborn.process is not None and reborn.process.poll() is None, stack.logs()
        assert set(done.ended) == first | second, stack.logs()
        assert set(done.ended.values()) == {1}, "a run ended twice"
        assert set(done.status.values()) == {"succeeded"}, stack.logs()
        assert "earlier life" in reborn.log(), reborn.log()
        assert redis.hget(keys.worker(name), "comfyui_url") == stack.comfyui_urls[0]  # listed again
    done.close()


def test_a_second_live_worker_with_the_same_name_is_refused(redis_url: str, tmp_path: Path) -> None:
    done = Completions(redis_url)
    with LocalStack(redis_url, tmp_path, workers=1, env=FAST) as stack:
        name = stack.worker_name(0)
        redis = Redis.from_url(redis_url, decode_responses=True)
        deadline = time.monotonic() + 20
        while not redis.exists(f"rq:worker:{name}") and time.monotonic() < deadline:
            time.sleep(0.05)
        twin = Proc(["worker", "--comfyui-url", stack.comfyui_urls[0], "--name", name], tmp_path / "twin.log")
        twin.env.update(stack.env)
        twin.start()
        assert twin.process is not None
        code = twin.process.wait(30)
        assert code == 2 and "held by a live worker" in twin.log(), twin.log()
        assert "Traceback" not in twin.log(), twin.log()
        # The refused twin wrote nothing into the live worker's fleet entry and did not remove it.
        assert redis.exists(keys.worker(name)) and redis.hget(keys.worker(name), "state") == "idle"
        runs = {submit(requests.Session(), stack.api, "invert", INVERT) for _ in range(2)}
        done.wait_for(runs, 30)
        assert set(done.status.values()) == {"succeeded"} and set(done.ended) == runs, stack.logs()
        assert stack.workers[0].process is not None and stack.workers[0].process.poll() is None
    done.close()
