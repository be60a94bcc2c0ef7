"""Comfy Dispatch against a hand-written client on the same ComfyUI, side by side in one run.

    python bench/overhead.py [--comfyui-url URL] [--latency-runs 100] [--rounds 3] [--fleet 6]
                             [--set COMFY_DISPATCH_X=VALUE ...] [--download-outputs]

Starts a redis-server and the stack as real processes (API with API keys on, scheduler, one worker)
on one ComfyUI: a fake one by default, or ``--comfyui-url`` (a real ComfyUI; then only its own
job times are used). A worker reads a fake's outputs from its output folder, as one on ComfyUI's host
is set up to (``COMFY_DISPATCH_COMFYUI_OUTPUT_DIR``); ``--download-outputs`` fetches them over ``/view``.
The other way is ``bench.clients.DirectClient``: what a user writes instead
(own websocket, ``POST /prompt``, wait for the end, ``/history``, ``/view``). Both ways alternate
on the same ComfyUI, so the machine's noise falls on both. It prints:

* added latency of single runs on an idle stack: each run is paired with a direct one just before or
  after it (the order alternates); p50 and p99 of (through the stack − direct);
* runs/s of 8 concurrent clients, direct and through the stack, and their ratio, for a 0 ms, a 50 ms
  and a 250 ms job (fake ComfyUI's ``exec_seconds``): ``--rounds`` rounds, the way that goes first
  alternating; each rate is taken between the 9th and the last completion (the queue full);
  the median ratio and the range over rounds;
* the GPU idle gap between consecutive prompts under a backlog (50 ms job), from ComfyUI's own
  ``execution_start`` / ``execution_success`` timestamps: median and p95, the stack with a backlog
  and the 8 direct clients;
* ``--fleet`` K workers on K fakes at 300 ms each: ``--fleet-runs`` runs queued at once, runs/s
  against the ideal K / 0.3 s.

Every output either way is checked to be its own run's (the inverse of the run's own colour, float32
maths as ComfyUI does). Ratios measured in one run are the figures, not absolute times.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

import requests
from redis import Redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.clients import DirectClient, StackClient, first_pixel  # noqa: E402
from dispatcher.apikeys import ApiKeyStore  # noqa: E402
from dispatcher.fake_comfyui.values import inverted_rgb8  # noqa: E402
from dispatcher.redis_server import RedisServer, find_redis_binary  # noqa: E402
from dispatcher.runs import RunStore  # noqa: E402
from dispatcher.settings import load_settings  # noqa: E402
from dispatcher.tenants import TenantStore  # noqa: E402
from tests.support_stack import LocalStack  # noqa: E402

log = logging.getLogger("bench.overhead")

CLIENTS = 8
JOBS = ((0.0, 400), (0.05, 120), (0.25, 48))  # (exec seconds of the fake, runs per measurement)
BACKLOG_EXEC, BACKLOG_RUNS = 0.05, 60


class Client(Protocol):
    def run(self, color: int) -> tuple[str, list[bytes]]: ...
    def close(self) -> None: ...


class Colours:
    """Fill colours whose inverses are all different, so an image that is another run's is always seen."""

    def __init__(self) -> None:
        self._seen: set[tuple[int, int, int]] = set()
        self._next = 1
        self._lock = threading.Lock()

    def take(self) -> int:
        with self._lock:
            while True:
                color = (self._next * 2654435761) & 0xFFFFFF
                self._next += 1
                if (expected := inverted_rgb8(color)) not in self._seen:
                    self._seen.add(expected)
                    return color


COLOURS = Colours()


def run_checked(client: Client, color: int) -> str:
    ident, files = client.run(color)
    if len(files) != 1 or first_pixel(files[0]) != inverted_rgb8(color):
        got = [first_pixel(f) for f in files]
        raise AssertionError(f"{ident}: expected one image of {inverted_rgb8(color)}, got {got}: another run's output")
    return ident


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


# -- measurements ------------------------------------------------------------------------------------------------


def paired_latency(direct: Client, stack: Client, pairs: int) -> tuple[list[float], list[float]]:
    """Seconds per run of each way, one pair at a time, the first way alternating."""
    times: dict[str, list[float]] = {"direct": [], "stack": []}
    ways = [("direct", direct), ("stack", stack)]
    for i in range(pairs):
        for name, client in ways if i % 2 == 0 else ways[::-1]:
            color = COLOURS.take()
            start = time.perf_counter()
            run_checked(client, color)
            times[name].append(time.perf_counter() - start)
    return times["direct"], times["stack"]


@dataclass
class Load:
    rate: float
    idents: list[str] = field(default_factory=list)


def concurrent(make: Callable[[], Client], runs: int, clients: int = CLIENTS) -> Load:
    """``clients`` threads doing runs back to back until ``runs`` are done; runs/s with the queue full."""
    lock = threading.Lock()
    done: list[float] = []
    idents: list[str] = []
    issued = 0
    errors: list[BaseException] = []

    def loop() -> None:
        nonlocal issued
        client = make()
        try:
            while True:
                with lock:
                    if issued >= runs or errors:
                        return
                    issued += 1
                ident = run_checked(client, COLOURS.take())
                with lock:
                    done.append(time.perf_counter())
                    idents.append(ident)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=loop) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    done.sort()
    # From the (clients+1)-th completion on, every client has had a run in flight: the steady state.
    steady = done[clients:]
    return Load((len(steady) - 1) / (steady[-1] - steady[0]), idents)


def exec_stamps(comfyui_url: str, prompt_ids: list[str]) -> list[tuple[int, int]]:
    """(execution_start, end) of each prompt, from ComfyUI's own history, in the order they ran."""
    session = requests.Session()
    spans = []
    for prompt_id in prompt_ids:
        entry = session.get(f"{comfyui_url}/history/{prompt_id}", timeout=10).json()[prompt_id]
        stamps = {name: data["timestamp"] for name, data in entry["status"]["messages"]}
        end = stamps.get("execution_success", stamps.get("execution_error", 0))
        spans.append((stamps["execution_start"], end))
    return sorted(spans)


def idle_gaps(spans: list[tuple[int, int]]) -> list[float]:
    """Milliseconds between one prompt's end and the next one's start (ComfyUI's clock, 1 ms steps)."""
    return [float(b[0] - a[1]) for a, b in zip(spans, spans[1:], strict=False)]


def prompt_ids_of(redis: Redis, run_ids: list[str]) -> list[str]:
    store = RunStore(redis)
    runs = [store.get(run_id) for run_id in run_ids]
    return [run.prompt_id for run in runs if run is not None]


def set_exec(urls: list[str], seconds: float) -> None:
    for url in urls:
        requests.post(f"{url}/fake/control", json={"exec_seconds": seconds}, timeout=5).raise_for_status()


def backlog(stack: StackClient, runs: int) -> tuple[list[str], float]:
    """Queue ``runs`` runs at once, wait for every one; their ids and runs/s from first POST to last end."""
    start = time.time()
    colours = {}
    for _ in range(runs):
        colour = COLOURS.take()
        colours[stack.submit(colour)["id"]] = colour
    finished = 0.0
    for run_id, colour in colours.items():
        view = stack.session.get(f"{stack.api}/v1/runs/{run_id}", params={"wait": 120}, timeout=130).json()
        if view["status"] != "succeeded":
            raise AssertionError(f"run {run_id}: {view['status']} {view.get('error')}")
        data = stack.session.get(view["outputs"][0]["url"], timeout=10).content
        if first_pixel(data) != inverted_rgb8(colour):
            raise AssertionError(f"run {run_id} got another run's image")
        finished = max(finished, _unix(view["finished_at"]))
    return list(colours), runs / (finished - start)


def _unix(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


# -- set-up ------------------------------------------------------------------------------------------------------


def api_key(redis: Redis) -> str:
    TenantStore(redis, load_settings({})).set("bench")
    return ApiKeyStore(redis).create("bench", "submit,read")[1]


def stack_env(extra: list[str]) -> dict[str, str]:
    env = {"COMFY_DISPATCH_AUTH": "enabled"}
    for item in extra:
        name, _, value = item.partition("=")
        env[name] = value
    return env


@contextmanager
def started(server: RedisServer, tmp: Path, name: str, **kwargs: object) -> Iterator[LocalStack]:
    Redis.from_url(server.url).flushall()
    with LocalStack(server.url, tmp / name, **kwargs) as stack:  # type: ignore[arg-type]
        listening(Redis.from_url(server.url, decode_responses=True), stack)
        yield stack


def listening(redis: Redis, stack: LocalStack, timeout: float = 60.0) -> None:
    """Wait until every worker waits on RQ's queue (its RQ record says idle): on a loaded 2-core machine a worker
    process takes seconds to start, which is not what is measured here."""
    names = [f"rq:worker:{stack.worker_name(i)}" for i in range(len(stack.comfyui_urls))]
    deadline = time.monotonic() + timeout
    while any(redis.hget(name, "state") != "idle" for name in names):
        if time.monotonic() > deadline:
            raise TimeoutError(f"workers not listening: {stack.logs()}")
        time.sleep(0.05)  # start-up only
    time.sleep(0.5)  # and their first heartbeats land


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}–{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--comfyui-url", help="a running ComfyUI to measure on (default: a fake one)")
    parser.add_argument("--latency-runs", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--jobs", default="0,0.05,0.25", help="fake job lengths (s) to measure throughput at; empty: latency only"
    )
    parser.add_argument("--fleet", type=int, default=6, help="workers (and fakes) of the fleet measure; 0 skips it")
    parser.add_argument("--fleet-runs", type=int, default=240)
    parser.add_argument("--fleet-exec", type=float, default=0.3)
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="a setting of the stack")
    parser.add_argument(
        "--download-outputs",
        action="store_true",
        help="workers download outputs over /view; default: read from the fake's output folder, as a worker on "
        "ComfyUI's host does with COMFY_DISPATCH_COMFYUI_OUTPUT_DIR (a real --comfyui-url is always /view)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    env = stack_env(args.set)
    rows: list[str] = []
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        server = RedisServer(data_dir=tmp / "redis", appendonly=False).start(find_redis_binary())
        try:
            urls = [args.comfyui_url] if args.comfyui_url else None
            local = not args.download_outputs
            with started(server, tmp, "one", workers=1, env=env, comfyui_urls=urls, local_outputs=local) as stack:
                rows += measure_one(stack, server, args)
            if args.fleet:
                fleet_kw = {"workers": args.fleet, "env": env, "exec_seconds": args.fleet_exec, "local_outputs": local}
                with started(server, tmp, "fleet", **fleet_kw) as stack:
                    rows += measure_fleet(stack, server, args)
        finally:
            server.stop()
    print("\n| measure | direct | through Comfy Dispatch | ratio or added |\n|---|---|---|---|")
    print("\n".join(rows))


def measure_one(stack: LocalStack, server: RedisServer, args: argparse.Namespace) -> list[str]:
    redis = Redis.from_url(server.url, decode_responses=True)
    key = api_key(redis)
    comfyui = stack.comfyui_urls[0]
    fake = not args.comfyui_url
    rows = []
    direct, through = DirectClient(comfyui), StackClient(stack.api, key)
    try:
        if fake:
            set_exec([comfyui], 0.0)
        paired_latency(direct, through, 10)  # warm-up: connections, caches
        d, s = paired_latency(direct, through, args.latency_runs)
        added = [b - a for a, b in zip(d, s, strict=True)]
        log.info(
            "latency: direct p50 %.1f ms, stack p50 %.1f ms", statistics.median(d) * 1e3, statistics.median(s) * 1e3
        )
        rows.append(
            f"| single run on an idle stack, {len(added)} pairs: p50 / p99 | {quantile(d, 0.5) * 1e3:.1f} / "
            f"{quantile(d, 0.99) * 1e3:.1f} ms | {quantile(s, 0.5) * 1e3:.1f} / {quantile(s, 0.99) * 1e3:.1f} ms "
            f"| added {quantile(added, 0.5) * 1e3:.1f} / {quantile(added, 0.99) * 1e3:.1f} ms |"
        )
    finally:
        direct.close()
        through.close()
    wanted = [float(j) for j in args.jobs.split(",") if j.strip()]
    jobs = [(s, runs) for s, runs in JOBS if s in wanted] if fake else ([(0.0, JOBS[0][1])] if wanted else [])
    for seconds, runs in jobs:
        if fake:
            set_exec([comfyui], seconds)
        rates: dict[str, list[float]] = {"direct": [], "stack": []}
        gaps: dict[str, list[float]] = {"direct": [], "stack": []}
        for round_ in range(args.rounds):
            ways: list[tuple[str, Callable[[], Client]]] = [
                ("direct", lambda: DirectClient(comfyui)),
                ("stack", lambda: StackClient(stack.api, key)),
            ]
            for name, make in ways if round_ % 2 == 0 else ways[::-1]:
                load = concurrent(make, runs)
                rates[name].append(load.rate)
                prompts = load.idents if name == "direct" else prompt_ids_of(redis, load.idents)
                gaps[name] += idle_gaps(exec_stamps(comfyui, prompts))
                log.info("%s ms job, round %d, %s: %.1f runs/s", seconds * 1e3, round_ + 1, name, load.rate)
        ratios = [s / d for d, s in zip(rates["direct"], rates["stack"], strict=True)]
        label = f"{seconds * 1e3:.0f} ms job" if fake else "this ComfyUI's invert 64²"
        rows.append(
            f"| {CLIENTS} clients, {label}, runs/s (median, range of {args.rounds}) | {spread(rates['direct'])} "
            f"| {spread(rates['stack'])} | **{spread(ratios)}** |"
        )
        if seconds == BACKLOG_EXEC or not fake:
            rows.append(
                f"| idle gap between prompts, {CLIENTS} clients, {label}: median / p95 | "
                f"{quantile(gaps['direct'], 0.5):.0f} / {quantile(gaps['direct'], 0.95):.0f} ms | "
                f"{quantile(gaps['stack'], 0.5):.0f} / {quantile(gaps['stack'], 0.95):.0f} ms | |"
            )
    if fake and BACKLOG_EXEC in wanted:
        set_exec([comfyui], BACKLOG_EXEC)
        through = StackClient(stack.api, key)
        run_ids, _ = backlog(through, BACKLOG_RUNS)
        through.close()
        stack_gaps = idle_gaps(exec_stamps(comfyui, prompt_ids_of(redis, run_ids)))
        rows.append(
            f"| GPU idle gap under a backlog of {BACKLOG_RUNS} runs, {BACKLOG_EXEC * 1e3:.0f} ms job: median / p95 | | "
            f"{quantile(stack_gaps, 0.5):.0f} / {quantile(stack_gaps, 0.95):.0f} ms | |"
        )
    return rows


def measure_fleet(stack: LocalStack, server: RedisServer, args: argparse.Namespace) -> list[str]:
    redis = Redis.from_url(server.url, decode_responses=True)
    through = StackClient(stack.api, api_key(redis))
    try:
        run_ids, rate = backlog(through, args.fleet_runs)
    finally:
        through.close()
    ideal = args.fleet / args.fleet_exec
    runs = [r for r in (RunStore(redis).get(i) for i in run_ids) if r is not None]
    gaps: list[float] = []
    for url in stack.comfyui_urls:
        gaps += idle_gaps(exec_stamps(url, [r.prompt_id for r in runs if r.comfyui_url == url]))
    log.info("fleet: %.2f runs/s of an ideal %.2f; idle gaps median %.0f ms", rate, ideal, statistics.median(gaps))
    return [
        f"| {args.fleet} workers on {args.fleet} fakes at {args.fleet_exec * 1e3:.0f} ms, {len(run_ids)} runs queued "
        f"at once: runs/s (idle gap median / p95) | ideal {ideal:.2f} | {rate:.2f} ({quantile(gaps, 0.5):.0f} / "
        f"{quantile(gaps, 0.95):.0f} ms) | **{rate / ideal:.3f}** |"
    ]


if __name__ == "__main__":
    main()
