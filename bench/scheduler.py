"""Scheduler benchmark: admission checks per second and dispatches per second, on a real redis-server.

    python bench/scheduler.py [--seconds 3] [--tenants 100] [--runs 20000]

* admission: ``Admission.check`` (one Lua leaky bucket per call) from 1 and from 4 client threads;
* submit: ``Submitter.submit`` (bind + one Lua script), one client;
* dispatch: ``Dispatcher.take`` over a backlog spread across many tenants and three priorities
  (round-robin, limits, fencing numbers), alone and together with the RQ enqueue the scheduler does;
  and routed: every run needs 7 node classes and one of 21 checkpoints, which a fleet of 1,000 workers
  (2 slots each) in 10 capability sets holds, each set 2 checkpoints of its own and one common to all; each
  pass has the free slots of 25 workers picked at random; with model affinity each worker is a route.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

from redis import Redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dispatcher import keys  # noqa: E402
from dispatcher.admission import Admission  # noqa: E402
from dispatcher.connections import Connections  # noqa: E402
from dispatcher.fleet import WorkerInfo  # noqa: E402
from dispatcher.redis_server import RedisServer, find_redis_binary  # noqa: E402
from dispatcher.routing.capabilities import Capabilities, Needs  # noqa: E402
from dispatcher.routing.lua import encode_routes  # noqa: E402
from dispatcher.routing.store import CapabilityStore  # noqa: E402
from dispatcher.runs import PRIORITIES, new_run  # noqa: E402
from dispatcher.scheduling.dispatch import Dispatcher  # noqa: E402
from dispatcher.scheduling.scheduler import Scheduler  # noqa: E402
from dispatcher.settings import load_settings  # noqa: E402
from dispatcher.submit import Submitter  # noqa: E402
from dispatcher.workflows import Registry  # noqa: E402


def admission_rate(url: str, seconds: float, threads: int) -> float:
    counts = [0] * threads
    stop = time.perf_counter() + seconds

    def client(i: int) -> None:
        admission = Admission(Redis.from_url(url, decode_responses=True))
        while time.perf_counter() < stop:
            admission.check(f"key-{i % 8}", rate=1e9, burst=1e9)
            counts[i] += 1

    workers = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(counts) / seconds


def submit_rate(url: str, seconds: float) -> float:
    settings = load_settings({}, redis_url=url, max_queued=0)
    submitter = Submitter(Redis.from_url(url, decode_responses=True), Registry.load(settings.workflows_dir), settings)
    body = {"params": {"width": 8, "height": 8}}
    done, stop = 0, time.perf_counter() + seconds
    while time.perf_counter() < stop:
        submitter.submit("invert", body, tenant=f"t{done % 50}")
        done += 1
    return done / seconds


NODES = frozenset(
    {"KSampler", "CheckpointLoaderSimple", "EmptyLatentImage", "CLIPTextEncode", "VAEDecode", "SaveImage"}
)
SETS = 10
WORKERS_PER_SET = 100


def publish_fleet(redis: Redis) -> list[WorkerInfo]:
    """10 capability sets of 100 workers with 2 slots each (each with one of its set's checkpoints loaded)."""
    store = CapabilityStore(redis, ttl_seconds=3600)
    fleet = []
    for k in range(SETS):
        files = [f"own-{k}-a.safetensors", f"own-{k}-b.safetensors", "common.safetensors"]
        digest = store.publish(Capabilities(nodes=NODES | {f"Custom{k}"}, models={"checkpoints": frozenset(files)}))
        for w in range(WORKERS_PER_SET):
            loaded = f"checkpoints/{files[w % 3]}"
            fleet.append(WorkerInfo(f"w{k}-{w}", "", True, "idle", "", 0.0, slots=2, caps=digest, checkpoint=loaded))
    return fleet


def needs_of_run(i: int) -> str:
    k = i % (2 * SETS + 1)
    name = "common.safetensors" if k == 2 * SETS else f"own-{k // 2}-{'ab'[k % 2]}.safetensors"
    return Needs(NODES, frozenset({("checkpoints", name)})).to_text()


def fill_backlogs(redis: Redis, runs: int, tenants: int, *, routed: bool = False) -> None:
    redis.flushall()
    pipe = redis.pipeline(transaction=False)
    for i in range(runs):
        tenant, priority = f"t{i % tenants}", PRIORITIES[i % 3]
        run = new_run("invert", {}, priority=priority, tenant=tenant, now=time.time() + i * 1e-6)
        if routed:
            run.needs = needs_of_run(i)
        pipe.hset(keys.run(run.id), mapping=run.to_redis())  # type: ignore[arg-type]
        pipe.zadd(keys.backlog(tenant, priority), {run.id: run.created_at})
        if i < tenants * 3:
            pipe.rpush(keys.rotation(priority), tenant)
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()


def dispatch_rate(
    url: str, runs: int, tenants: int, *, with_rq: bool, routed: bool = False, affinity: bool = False
) -> float:
    conns = Connections.from_url(url)
    fill_backlogs(conns.text, runs, tenants, routed=routed)
    fleet = publish_fleet(conns.text) if routed else []
    scheduler = Scheduler(load_settings({}, redis_url=url), conns)
    dispatcher = Dispatcher(conns.text, dispatch_rate=0, max_running=0)
    picks = random.Random(7)
    dispatched = idle = 0
    start = time.perf_counter()
    while dispatched < runs:
        # 50 free slots a pass, as the unrouted case: routed, those of 25 workers of the fleet, picked at random
        # (the fleet's 2,000 slots would take everything at once).
        routes: str | int = encode_routes(picks.sample(fleet, 25), affinity=affinity) if routed else 50
        taken = dispatcher.take(routes)
        if not taken.runs:
            idle += 1  # routed: the last runs may need sets none of the picked workers has; pick again
            if idle > 100:
                raise RuntimeError(f"dispatched only {dispatched} of {runs}")
            continue
        if with_rq:
            scheduler.handout.enqueue(taken.runs)
        dispatched += len(taken.runs)
        # As if the workers took them all and ended them: room for the next pass.
        pipe = conns.text.pipeline(transaction=False)
        pipe.delete(keys.INFLIGHT)
        for route in {run.route for run in taken.runs}:
            pipe.delete(f"{keys.NS}:routed:{route}")
        pipe.execute()
    elapsed = time.perf_counter() - start
    conns.close()
    return dispatched / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--runs", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(data_dir=Path(tmp), appendonly=False).start(find_redis_binary())
        try:
            rows = [
                ("admission checks/s, 1 client", admission_rate(server.url, args.seconds, 1)),
                ("admission checks/s, 4 clients", admission_rate(server.url, args.seconds, 4)),
                ("submissions/s (bind + store), 1 client", submit_rate(server.url, args.seconds)),
                (
                    f"dispatches/s, take only ({args.runs} runs, {args.tenants} tenants)",
                    dispatch_rate(server.url, args.runs, args.tenants, with_rq=False),
                ),
                ("dispatches/s, take + RQ enqueue", dispatch_rate(server.url, args.runs, args.tenants, with_rq=True)),
                (
                    f"dispatches/s, take only, routed: 1,000 workers in {SETS} capability sets",
                    dispatch_rate(server.url, args.runs, args.tenants, with_rq=False, routed=True),
                ),
                (
                    "dispatches/s, take only, routed with model affinity (a route per worker)",
                    dispatch_rate(server.url, args.runs, args.tenants, with_rq=False, routed=True, affinity=True),
                ),
            ]
        finally:
            server.stop()
    print("| measure | per second |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value:,.0f} |")


if __name__ == "__main__":
    main()
