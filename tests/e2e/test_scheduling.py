"""Scheduling through real processes: strict priority, and round-robin fairness between tenants."""

from __future__ import annotations

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
