"""What ``?wait=`` costs or saves against polling: end-to-end time of one run, sequential runs.

    python bench/wait.py [--runs 30]

Starts its own redis-server and a stack of real processes (a fake ComfyUI, the API, the
scheduler, one worker) and times, from the POST to holding the finished run:

* ``POST /v1/workflows/invert/runs?wait=60``: one request, answered when the run ends;
* ``POST`` then ``GET /v1/runs/{id}`` every 50 ms until the run has ended;
* the same, polling every 250 ms.

Runs go one at a time, so each sees an idle worker. Prints a markdown table: median and p95 per
way, each way's median minus the ``?wait=`` median, and how long after the run's end (its
``finished_at``, same machine clock) the client held it: what the way itself adds.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dispatcher.redis_server import RedisServer, find_redis_binary  # noqa: E402
from tests.support_stack import LocalStack  # noqa: E402

log = logging.getLogger("bench.wait")

BODY = {"params": {"width": 16, "height": 16, "color": 0x123456}}
TERMINAL = ("succeeded", "failed", "canceled")


Way = Callable[[requests.Session, str], dict[str, Any]]


def with_wait(session: requests.Session, api: str) -> dict[str, Any]:
    reply: dict[str, Any] = session.post(
        f"{api}/v1/workflows/invert/runs", params={"wait": 60}, json=BODY, timeout=70
    ).json()
    return reply


def polling(interval: float) -> Way:
    def run(session: requests.Session, api: str) -> dict[str, Any]:
        reply: dict[str, Any] = session.post(f"{api}/v1/workflows/invert/runs", json=BODY, timeout=10).json()
        while reply["status"] not in TERMINAL:
            time.sleep(interval)  # what a polling client does: the thing measured
            reply = session.get(f"{api}/v1/runs/{reply['id']}", timeout=10).json()
        return reply

    return run


def measure(way: Way, api: str, runs: int) -> tuple[list[float], list[float]]:
    """Sorted end-to-end times, and sorted delays between each run's end and the client holding it."""
    session = requests.Session()
    times: list[float] = []
    late: list[float] = []
    for _ in range(runs):
        start = time.perf_counter()
        run = way(session, api)
        times.append(time.perf_counter() - start)
        late.append(time.time() - datetime.fromisoformat(run["finished_at"]).timestamp())
        if run["status"] != "succeeded":
            raise RuntimeError(f"a run ended {run['status']}")
    return sorted(times), sorted(late)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30, help="runs per way")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ways = {"`POST ?wait=60`": with_wait, "poll every 50 ms": polling(0.05), "poll every 250 ms": polling(0.25)}
    results: dict[str, tuple[list[float], list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(data_dir=Path(tmp) / "redis", appendonly=False).start(find_redis_binary())
        try:
            with LocalStack(server.url, Path(tmp), workers=1) as stack:
                time.sleep(1.0)  # let the worker register before the clock starts
                measure(with_wait, stack.api, 5)  # warm-up
                for name, way in ways.items():
                    log.info("%s: %d runs", name, args.runs)
                    results[name] = measure(way, stack.api, args.runs)
        finally:
            server.stop()
    base = statistics.median(results["`POST ?wait=60`"][0])
    print("| way | median | p95 | median minus `?wait=` | run ended to client has it: median |")
    print("|---|---|---|---|---|")
    for name, (times, late) in results.items():
        median, p95 = statistics.median(times), times[max(int(len(times) * 0.95) - 1, 0)]
        delay = statistics.median(late)
        print(
            f"| {name} | {median * 1000:.1f} ms | {p95 * 1000:.1f} ms | {(median - base) * 1000:+.1f} ms "
            f"| {delay * 1000:.1f} ms |"
        )


if __name__ == "__main__":
    main()
