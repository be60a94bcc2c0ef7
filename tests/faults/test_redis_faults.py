"""Redis SIGKILLed under load, and two API replicas on one Redis: real processes, counted.

Redis killed (not shut down) while workers are mid-run and clients keep submitting: with
``appendfsync always`` no accepted run is lost, none ends twice, and every process reconnects by itself.
Two API processes on one Redis under concurrent load: the same answers, and limits exact across both
(the buckets and counters live in Redis scripts, not in a process).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from redis import Redis
from redis.exceptions import RedisError

from dispatcher.apikeys import ApiKeyStore
from dispatcher.redis_server import RedisServer, find_redis_binary
from dispatcher.settings import load_settings
from dispatcher.tenants import TenantStore
from tests.faults.test_faults import FAST
from tests.support import Proc, wait_http
from tests.support_stack import LocalStack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

INVERT = {"params": {"width": 8, "height": 8}}
TERMINAL = {"done", "error", "canceled"}


class Submitter(threading.Thread):
    """A client submitting runs one after another until stopped; keeps the ids it was answered 202 for."""

    def __init__(self, api: str) -> None:
        super().__init__(daemon=True)
        self.api = api
        self.accepted: list[str] = []
        self.refused: Counter[str] = Counter()
        self.stopped = threading.Event()

    def run(self) -> None:
        session = requests.Session()
        i = 0
        while not self.stopped.is_set():
            i += 1
            body = {"params": {"width": 8, "height": 8, "color": i}}
            try:
                reply = session.post(f"{self.api}/v1/workflows/invert/runs", json=body, timeout=15)
            except requests.RequestException as exc:
                self.refused[type(exc).__name__] += 1
                continue
            if reply.status_code == 202:
                self.accepted.append(reply.json()["id"])
            else:
                self.refused[str(reply.status_code)] += 1
                time.sleep(0.05)  # Redis is away: a client backs off a little


def ends_of(redis: Redis, run_id: str) -> int:
    """How many times the run ended: its terminal events (each end writes one, in the script that ends it)."""
    entries = redis.xrange(f"cd:run:{run_id}:events")
    return sum(1 for _, fields in entries if fields.get("type") in TERMINAL)


def test_redis_sigkilled_under_load_loses_no_accepted_run(tmp_path: Path) -> None:
    server = RedisServer(data_dir=tmp_path / "redis", appendonly=True, appendfsync="always").start(find_redis_binary())
    try:
        with LocalStack(server.url, tmp_path, workers=2, exec_seconds=0.1, env=FAST) as stack:
            clients = [Submitter(stack.api) for _ in range(3)]
            for client in clients:
                client.start()
            redis = Redis.from_url(server.url, decode_responses=True)
            deadline = time.monotonic() + 30
            while redis.zcard("cd:inflight") == 0 and time.monotonic() < deadline:  # workers mid-run
                time.sleep(0.05)
            time.sleep(1.0)
            before = sum(len(c.accepted) for c in clients)
            server.stop(kill=True)  # SIGKILL: no shutdown, no final AOF write
            time.sleep(1.0)
            server.start(find_redis_binary())
            # Clients go on; the stack must serve them again by itself.
            deadline = time.monotonic() + 30
            while sum(len(c.accepted) for c in clients) < before + 30 and time.monotonic() < deadline:
                time.sleep(0.1)
            for client in clients:
                client.stopped.set()
            for client in clients:
                client.join(20)
            accepted = [run_id for c in clients for run_id in c.accepted]
            redis = Redis.from_url(server.url, decode_responses=True)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    statuses = [redis.hget(f"cd:run:{run_id}", "status") for run_id in accepted]
                except RedisError:
                    statuses = []
                if statuses and all(s in ("succeeded", "failed", "canceled") for s in statuses):
                    break
                time.sleep(0.5)
            time.sleep(2)  # a duplicate end would show up meanwhile
            statuses = [redis.hget(f"cd:run:{run_id}", "status") for run_id in accepted]
            lost = [r for r, s in zip(accepted, statuses, strict=True) if s is None]
            ends = Counter(ends_of(redis, run_id) for run_id in accepted)
            refused = sum((c.refused for c in clients), Counter())
            alive = {str(p.log_path): p.process is not None and p.process.poll() is None for p in stack.procs()}
            print(
                f"\nRedis SIGKILLed under load (appendfsync always): {len(accepted)} accepted ({before} before the "
                f"kill), {sum(1 for s in statuses if s == 'succeeded')} succeeded, {len(lost)} lost, "
                f"ends per run {dict(ends)}, answers other than 202 while Redis was away {dict(refused)}, "
                f"processes alive {sum(alive.values())}/{len(alive)}"
            )
            assert len(accepted) >= before + 30, stack.logs()  # served again after the restart
            assert lost == [], stack.logs()
            assert set(statuses) == {"succeeded"}, stack.logs()
            assert set(ends) == {1}, "a run ended twice (or never)"
            assert all(alive.values()), alive
    finally:
        server.stop()


def test_two_api_replicas_give_the_same_answers_and_exact_limits(redis_url: str, tmp_path: Path) -> None:
    """One key with a burst of 40 and a trickle of a rate, 120 submissions spread over both replicas at once:
    exactly 40 accepted; a tenant at max_queued 25: exactly 25 queued; and a run reads the same on both."""
    redis = Redis.from_url(redis_url, decode_responses=True)
    env = {"COMFY_DISPATCH_AUTH": "enabled"}
    with LocalStack(redis_url, tmp_path, workers=1, start_workers=False, env=env) as stack:
        second = Proc(["api", "--port", str(stack.api_port + 1)], tmp_path / "api-2.log", stack.env).start()
        try:
            replicas = [stack.api, f"http://127.0.0.1:{stack.api_port + 1}"]
            wait_http(replicas[1] + "/readyz")
            settings = load_settings({})
            tenants, keys = TenantStore(redis, settings), ApiKeyStore(redis)
            tenants.set("bursty", submit_rate=0.001, submit_burst=40)
            tenants.set("capped", max_queued=25)
            bursty = keys.create("bursty", "submit,read")[1]
            capped = keys.create("capped", "submit,read")[1]

            def submit(i: int, key: str) -> int:
                reply = requests.post(
                    f"{replicas[i % 2]}/v1/workflows/invert/runs",
                    json={"params": {"width": 8, "height": 8, "color": i}},
                    headers={"X-API-KEY": key},
                    timeout=30,
                )
                return reply.status_code

            with ThreadPoolExecutor(16) as pool:
                rate = Counter(pool.map(lambda i: submit(i, bursty), range(120)))
                queue = Counter(pool.map(lambda i: submit(i, capped), range(80)))
            run_id = requests.post(
                f"{replicas[0]}/v1/workflows/invert/runs", json=INVERT, headers={"X-API-KEY": capped}, timeout=10
            )
            print(
                f"\ntwo API replicas: burst 40 → {dict(rate)}; max_queued 25 → {dict(queue)}; "
                f"a 26th for the capped tenant: {run_id.status_code}"
            )
            assert rate == {202: 40, 429: 80}
            assert queue == {202: 25, 429: 55}
            assert run_id.status_code == 429
            assert redis.zcard("cd:backlog:bursty:normal") == 40 and redis.zcard("cd:backlog:capped:normal") == 25
            # The same run reads the same through either replica.
            some = next(iter(redis.zrange("cd:backlog:bursty:normal", 0, 0)))
            seen = [
                requests.get(f"{api}/v1/runs/{some}", headers={"X-API-KEY": bursty}, timeout=10).json()
                for api in replicas
            ]
            assert seen[0] == seen[1] and seen[0]["status"] == "queued"
        finally:
            second.stop()
