"""Model affinity benchmark: runs alternating two checkpoints on workers that hold both, affinity on and off.

    python bench/affinity.py [--runs 200] [--load-seconds 1] [--rounds 1]

Starts its own redis-server, two fake ComfyUIs that both hold checkpoints ``a`` and ``b`` and take
``--load-seconds`` longer for the first prompt after a checkpoint change (``--model-load-seconds``), two
workers and the API: all real processes. ``--runs`` txt2img runs alternating ``a`` and ``b`` are submitted
at once (one batch request); the time is from the request to the last run's end. The same is measured with
``COMFY_DISPATCH_MODEL_AFFINITY=0`` (runs routed by capability only) on a fresh stack, alternating. The
fakes count the checkpoint loads (``model_loads`` in ``/fake/stats``): the model switches.
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
from tests.support_stack import LocalStack  # noqa: E402

HOLDS = {"checkpoints": ["a.safetensors", "b.safetensors"]}


def body(checkpoint: str) -> dict[str, object]:
    params = {"prompt": "a cat", "checkpoint": checkpoint, "steps": 1, "width": 64, "height": 64}
    return {"workflow": "txt2img", "params": params}


def ready(api: str, workers: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        listed = requests.get(f"{api}/v1/workers", timeout=10).json()["workers"]
        if len([w for w in listed if w["capabilities"] and w["health"] == "healthy"]) == workers:
            return
        time.sleep(0.2)
    raise RuntimeError("the workers did not publish their capabilities")


def measure(tmp: Path, runs: int, load_seconds: float, *, affinity: bool) -> tuple[float, int]:
    """(seconds from the batch request to the last run's end, checkpoint loads in the fakes)."""
    server = RedisServer(data_dir=tmp / "redis", appendonly=False).start(find_redis_binary())
    env = {"COMFY_DISPATCH_MODEL_AFFINITY": "1" if affinity else "0"}
    try:
        models = [HOLDS, HOLDS]
        with LocalStack(
            server.url, tmp, workers=2, env=env, fake_models=models, model_load_seconds=load_seconds
        ) as stack:
            ready(stack.api, 2)
            items = [body("ab"[i % 2] + ".safetensors") for i in range(runs)]
            start = time.perf_counter()
            answer = requests.post(f"{stack.api}/v1/runs/batch", json={"runs": items}, timeout=60).json()
            if answer["accepted"] != runs:
                raise RuntimeError(f"refused: {answer['items'][0]}")
            ids = [item["run"]["id"] for item in answer["items"]]
            store = RunStore(Redis.from_url(server.url, decode_responses=True))
            deadline = time.monotonic() + runs * (load_seconds + 1) + 60
            while True:
                found = [store.get(i) for i in ids]
                if all(r is not None and r.status.terminal for r in found):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError("the runs did not end")
                time.sleep(0.05)
            elapsed = time.perf_counter() - start
            failed = [r.id for r in found if r and r.status != "succeeded"]
            if failed:
                raise RuntimeError(f"{len(failed)} runs did not succeed")
            loads = sum(int(fake.stats()["model_loads"]) for fake in stack.fakes)
            return elapsed, loads
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--load-seconds", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    results: dict[bool, list[tuple[float, int]]] = {True: [], False: []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for affinity in (True, False):
                results[affinity].append(
                    measure(Path(tmp) / f"{r}-{affinity}", args.runs, args.load_seconds, affinity=affinity)
                )
    print(
        f"{args.runs} txt2img runs alternating checkpoints a and b, 2 workers holding both, "
        f"{args.load_seconds:g} s per checkpoint load\n"
    )
    print("| routing | seconds, median (range) | checkpoint loads |\n|---|---|---|")
    for affinity, label in ((True, "capability + affinity"), (False, "capability only (affinity off)")):
        times = [t for t, _ in results[affinity]]
        loads = [n for _, n in results[affinity]]
        print(
            f"| {label} | {statistics.median(times):.1f} ({min(times):.1f}-{max(times):.1f}) | "
            f"{statistics.median(loads):g} |"
        )
    ratios = [a[0] / b[0] for a, b in zip(results[True], results[False], strict=True)]
    print(f"\ntime with affinity / without: {statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})")


if __name__ == "__main__":
    main()
