"""Two checkouts of Comfy Dispatch side by side: the added latency of single runs, paired, in one run.

    cd /tmp && python /path/to/bench/compare.py OLD_CHECKOUT NEW_CHECKOUT [--rounds 400]

On a shared machine the direct client's own p50 moves by half from one minute to the next, and the stack's
added time with it: two benchmark runs minutes apart do not compare. This starts both stacks at once (each with
its own redis-server, fake ComfyUI, API with API keys on, scheduler and one worker, the code of its checkout:
``PYTHONPATH``) and runs, every round, one run through each stack and one direct run on each one's fake, in
rotating order. It prints each stack's added latency (its run minus the direct run of the same round on its own
fake), p50 and p99, and the median of the paired differences (new minus old). Run it from a folder that is not
a checkout: ``python -m`` looks in the current folder first.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from redis import Redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.clients import DirectClient, StackClient  # noqa: E402
from bench.overhead import COLOURS, Client, api_key, listening, quantile, run_checked, set_exec  # noqa: E402
from dispatcher.redis_server import RedisServer, find_redis_binary  # noqa: E402
from tests.support_stack import LocalStack  # noqa: E402

WARM_UP = 20


def rounds(ways: list[tuple[str, Client]], count: int) -> dict[str, list[float]]:
    """Seconds per run of each way, ``count`` rounds after a warm-up, the order rotating every round."""
    times: dict[str, list[float]] = {name: [] for name, _ in ways}
    for i in range(count + WARM_UP):
        order = ways[i % len(ways) :] + ways[: i % len(ways)]
        for name, client in order if (i // len(ways)) % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            run_checked(client, COLOURS.take())
            if i >= WARM_UP:
                times[name].append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("old", type=Path, help="a checkout of the code to compare against")
    parser.add_argument("new", type=Path, help="a checkout of the code to measure")
    parser.add_argument("--rounds", type=int, default=400)
    args = parser.parse_args()
    if Path.cwd().resolve() in (args.old.resolve(), args.new.resolve()):
        sys.exit("run it from another folder: python -m would take the current folder's code for both stacks")
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        binary = find_redis_binary()
        servers = [RedisServer(data_dir=tmp / f"redis-{i}", appendonly=False).start(binary) for i in (0, 1)]
        stacks: list[LocalStack] = []
        try:
            for i, root in enumerate((args.old, args.new)):
                env = {"COMFY_DISPATCH_AUTH": "enabled", "PYTHONPATH": str(root.resolve())}
                stack = LocalStack(servers[i].url, tmp / f"stack-{i}", workers=1, local_outputs=True, env=env)
                stacks.append(stack.__enter__())
            ways: list[tuple[str, Client]] = []
            for name, server, stack in zip(("old", "new"), servers, stacks, strict=True):
                redis = Redis.from_url(server.url, decode_responses=True)
                listening(redis, stack)
                set_exec(stack.comfyui_urls, 0.0)
                ways += [(f"direct {name}", DirectClient(stack.comfyui_urls[0]))]
                ways += [(name, StackClient(stack.api, api_key(redis)))]
            times = rounds(ways, args.rounds)
        finally:
            for stack in stacks:
                stack.__exit__(None, None, None)
            for server in servers:
                server.stop()
    added = {
        name: [run - direct for run, direct in zip(times[name], times[f"direct {name}"], strict=True)]
        for name in ("old", "new")
    }
    for name in ("old", "new"):
        direct, extra = times[f"direct {name}"], added[name]
        print(
            f"{name}: direct p50 {quantile(direct, 0.5) * 1e3:.2f} ms, added p50 {quantile(extra, 0.5) * 1e3:.2f} / "
            f"p99 {quantile(extra, 0.99) * 1e3:.2f} ms"
        )
    paired = [new - old for old, new in zip(added["old"], added["new"], strict=True)]
    print(f"new - old, paired by round: added p50 {statistics.median(paired) * 1e3:+.2f} ms")


if __name__ == "__main__":
    main()
