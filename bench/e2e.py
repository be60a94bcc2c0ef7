"""End-to-end benchmark: runs/s through 2 workers with 2 fake ComfyUIs, and latency added per run.

    python bench/e2e.py [--runs 300] [--latency-runs 100]

Starts its own redis-server, two fake ComfyUI processes, the API and two
workers (all real processes on loopback), then measures:

* throughput: N invert runs submitted over HTTP as fast as one client can,
  from the first POST to the last completion (pub/sub), in runs/s;
* added latency: one run at a time, from POST to the completion message,
  minus ComfyUI's own execution time for that prompt (``execution_start`` to
  ``execution_success`` timestamps in its ``/history`` entry).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests
from redis import Redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dispatcher.redis_server import RedisServer, find_redis_binary  # noqa: E402
from dispatcher.runs import RunStore  # noqa: E402
from tests.support_stack import LocalStack, submit  # noqa: E402

BODY = {"params": {"width": 16, "height": 16, "color": 0x123456}}


def throughput(stack: LocalStack, redis: Redis, runs: int) -> float:
    events = redis.pubsub(ignore_subscribe_messages=True)
    events.psubscribe("cd:run:*:done")
    session = requests.Session()
    start = time.perf_counter()
    for _ in range(runs):
        submit(session, stack.api, "invert", BODY)
    done = 0
    deadline = time.monotonic() + 120
    while done < runs:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {done}/{runs} runs ended")
        message = events.get_message(timeout=5)  # None also for the (ignored) subscribe confirmation
        if message is not None and message["type"] == "pmessage":
            done += 1
    return runs / (time.perf_counter() - start)


def added_latency(stack: LocalStack, redis: Redis, runs: int) -> list[float]:
    store = RunStore(redis)
    session = requests.Session()
    added: list[float] = []
    for _ in range(runs):
        events = redis.pubsub(ignore_subscribe_messages=True)
        events.psubscribe("cd:run:*:done")
        events.get_message(timeout=1)  # the subscribe confirmation
        t0 = time.perf_counter()
        run_id = submit(session, stack.api, "invert", BODY)
        while (message := events.get_message(timeout=30)) is None or message["type"] != "pmessage":
            pass
        total = time.perf_counter() - t0
        events.close()
        run = store.get(run_id)
        assert run is not None and run.status == "succeeded", run
        fake = next(f for f in stack.fakes if f.url == run.comfyui_url)
        entry = requests.get(f"{fake.url}/history/{run.prompt_id}", timeout=5).json()[run.prompt_id]
        stamps = {name: data["timestamp"] for name, data in entry["status"]["messages"]}
        comfy_seconds = (stamps["execution_success"] - stamps["execution_start"]) / 1000
        added.append(total - comfy_seconds)
    return added


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--latency-runs", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(data_dir=Path(tmp) / "redis", appendonly=False).start(find_redis_binary())
        try:
            with LocalStack(server.url, Path(tmp), workers=2) as stack:
                redis = Redis.from_url(server.url, decode_responses=True)
                time.sleep(1.0)  # let both workers register before the clock starts
                added_latency(stack, redis, 5)  # warm-up
                rate = throughput(stack, redis, args.runs)
                added = sorted(added_latency(stack, redis, args.latency_runs))
        finally:
            server.stop()
    p95 = added[int(len(added) * 0.95) - 1]
    print("| measure | value |\n|---|---|")
    print(f"| throughput, {args.runs} runs, 2 workers + 2 fakes | {rate:.1f} runs/s |")
    print(f"| added latency per run, median of {len(added)} | {statistics.median(added) * 1000:.1f} ms |")
    print(f"| added latency per run, p95 | {p95 * 1000:.1f} ms |")


if __name__ == "__main__":
    main()
