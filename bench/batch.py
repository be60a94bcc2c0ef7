"""Submission benchmark: runs/s accepted through ``POST /v1/runs/batch`` against one run per request.

    python bench/batch.py [--rounds 5] [--batch 1000] [--requests 10] [--seconds 2]

Starts its own redis-server and the API (real processes on loopback; no worker, so what is measured is
accepting and storing runs, not running them). Each round measures, one after the other on the same stack:

* batch: ``--requests`` requests of ``--batch`` invert runs each, from one client, sent back to back;
* single, 1 client: ``POST /v1/workflows/invert/runs`` one after the other for ``--seconds``;
* single, 8 clients: the same from 8 threads with a session each.

Every run is checked accepted (202 for the whole request, or the item's own 202). Rounds alternate the three
so that the machine's noise falls on each alike; the table gives medians with the spread (min-max) and the
batch's rate as a multiple of each single-submission rate, round by round.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dispatcher.redis_server import RedisServer, find_redis_binary  # noqa: E402
from tests.support_stack import LocalStack  # noqa: E402

PARAMS = {"width": 16, "height": 16, "color": 0x123456}


def batched(api: str, requests_count: int, size: int) -> float:
    """Runs/s accepted by ``requests_count`` batch requests of ``size`` runs each, one client."""
    session = requests.Session()
    bodies = [
        {"runs": [{"workflow": "invert", "params": PARAMS, "idempotency_key": uuid.uuid4().hex} for _ in range(size)]}
        for _ in range(requests_count)
    ]
    start = time.perf_counter()
    for body in bodies:
        reply = session.post(f"{api}/v1/runs/batch", json=body, timeout=60)
        reply.raise_for_status()
        answer = reply.json()
        if answer["accepted"] != size:
            raise RuntimeError(f"a batch of {size} had {answer['refused']} refused: {answer['items'][-1]}")
    return requests_count * size / (time.perf_counter() - start)


def single(api: str, clients: int, seconds: float) -> float:
    """Runs/s accepted by ``clients`` threads each posting one run per request, for ``seconds``."""
    counts = [0] * clients
    errors: list[str] = []
    stop_at = time.perf_counter() + seconds

    def client(index: int) -> None:
        session = requests.Session()
        while time.perf_counter() < stop_at:
            reply = session.post(f"{api}/v1/workflows/invert/runs", json={"params": PARAMS}, timeout=30)
            if reply.status_code != 202:
                errors.append(f"{reply.status_code} {reply.text[:200]}")
                return
            counts[index] += 1

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"single submissions refused: {errors[0]}")
    return sum(counts) / (time.perf_counter() - start)


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):,.0f} ({min(values):,.0f}-{max(values):,.0f})"


def ratio(values: list[float]) -> str:
    return f"{statistics.median(values):.1f}× ({min(values):.1f}-{max(values):.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    results: dict[str, list[float]] = {"batch": [], "single-1": [], "single-8": []}
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(data_dir=Path(tmp) / "redis", appendonly=False).start(find_redis_binary())
        try:
            with LocalStack(server.url, Path(tmp), workers=1, start_workers=False) as stack:
                batched(stack.api, 1, 100)  # warm-up: scripts loaded, connections open
                single(stack.api, 1, 0.3)
                for _ in range(args.rounds):
                    results["batch"].append(batched(stack.api, args.requests, args.batch))
                    results["single-1"].append(single(stack.api, 1, args.seconds))
                    results["single-8"].append(single(stack.api, 8, args.seconds))
        finally:
            server.stop()
    batch = results["batch"]
    print(f"runs/s accepted, median (min-max) of {args.rounds} rounds, API and Redis on this machine\n")
    print("| how | runs/s | batch's rate as a multiple |\n|---|---|---|")
    print(f"| POST /v1/runs/batch, {args.batch} runs a request, 1 client | {spread(batch)} | |")
    for name, label in (("single-1", "1 client"), ("single-8", "8 clients")):
        multiples = [b / s for b, s in zip(batch, results[name], strict=True)]
        print(f"| one run a request, {label} | {spread(results[name])} | {ratio(multiples)} |")


if __name__ == "__main__":
    main()
