"""How many events per second one SSE connection (``GET /v1/runs/{id}/events``) delivers.

    python bench/sse.py [--seconds 5] [--batch 100]

Starts its own redis-server and the API (``comfy-dispatch api``, a real uvicorn process), queues
one run, and opens its event stream. A producer process then appends progress events to that
run's stream as fast as Redis takes them (XADD in pipelines of ``--batch``) for ``--seconds``,
then a ``done``. The client (this process) counts the events it receives each second until the
``done`` arrives. The producer outruns the stream on purpose, so the client is never idle: what
it receives per second is what one connection sustains.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import statistics
import sys
import tempfile
import time
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path

import requests
from redis import Redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dispatcher import keys  # noqa: E402
from dispatcher.redis_server import RedisServer, find_redis_binary, free_port  # noqa: E402
from dispatcher.settings import load_settings  # noqa: E402
from dispatcher.submit import Submitter  # noqa: E402
from dispatcher.workflows import Registry  # noqa: E402
from tests.support import Proc, wait_http  # noqa: E402

log = logging.getLogger("bench.sse")

PROGRESS = json.dumps({"progress": 0.5, "node": "3"})


def produce(redis_url: str, run_id: str, seconds: float, batch: int, counter: Synchronized[int]) -> None:
    """Append progress events to the run's stream for ``seconds``, then ``done``; count them in ``counter``."""
    redis = Redis.from_url(redis_url)
    stream = keys.run_events(run_id)
    sent = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pipe = redis.pipeline(transaction=False)
        for _ in range(batch):
            pipe.xadd(stream, {"type": "progress", "data": PROGRESS})
        pipe.execute()
        sent += batch
    redis.xadd(stream, {"type": "done", "data": json.dumps({"status": "succeeded"})})
    counter.value = sent
    redis.close()


def consume(api: str, run_id: str) -> list[tuple[float, int]]:
    """Read the run's event stream to its end; (seconds since the first byte, events) per chunk received."""
    seen: list[tuple[float, int]] = []
    tail = b""
    start: float | None = None
    with requests.get(f"{api}/v1/runs/{run_id}/events", stream=True, timeout=60) as response:
        response.raise_for_status()
        for chunk in response.iter_content(chunk_size=1 << 16):
            now = time.perf_counter()
            start = now if start is None else start
            data = tail + chunk
            # One "event:" line per event. Count them in complete lines only (the data so far always
            # starts at a line start, hence the newline put in front), keep a partial line for later.
            cut = data.rfind(b"\n")
            seen.append((now - start, (b"\n" + data[: cut + 1]).count(b"\nevent: ")))
            tail = data[cut + 1 :]
    return seen


def per_second(seen: list[tuple[float, int]]) -> list[int]:
    buckets: dict[int, int] = {}
    for at, count in seen:
        buckets[int(at)] = buckets.get(int(at), 0) + count
    return [buckets.get(i, 0) for i in range(max(buckets) + 1)] if buckets else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="how long the producer appends events")
    parser.add_argument("--batch", type=int, default=100, help="XADDs per pipeline")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(data_dir=Path(tmp) / "redis", appendonly=False).start(find_redis_binary())
        port = free_port()
        env = {"COMFY_DISPATCH_REDIS_URL": server.url, "COMFY_DISPATCH_AUTH": "disabled"}
        env |= {"COMFY_DISPATCH_LOG_LEVEL": "WARNING", "COMFY_DISPATCH_OUTPUT_DIR": str(Path(tmp) / "out")}
        api = Proc(["api", "--port", str(port)], Path(tmp) / "api.log", env).start()
        try:
            url = f"http://127.0.0.1:{port}"
            wait_http(url + "/readyz")
            settings = load_settings({}, redis_url=server.url)
            redis = Redis.from_url(server.url, decode_responses=True)
            run = Submitter(redis, Registry.load(settings.workflows_dir), settings).submit("invert", {})
            sent = multiprocessing.Value("q", 0)
            work = (server.url, run.id, args.seconds, args.batch, sent)
            producer = multiprocessing.Process(target=produce, args=work)
            producer.start()
            seen = consume(url, run.id)
            producer.join(30)
        finally:
            api.stop()
            server.stop()
    received = sum(count for _, count in seen)
    elapsed = seen[-1][0] if seen else 0.0
    seconds = per_second(seen)[:-1] or per_second(seen)  # the last second is partial
    log.info(
        "producer appended %d events in %.1f s; client received %d (queued and done included)",
        sent.value,
        args.seconds,
        received,
    )
    spread = f"{statistics.median(seconds):,.0f} ({min(seconds):,} – {max(seconds):,})"
    print("| measure | value |\n|---|---|")
    print(f"| events received by one SSE connection, mean over {elapsed:.1f} s | {received / elapsed:,.0f} events/s |")
    print(f"| same, per whole second: median (min – max) | {spread} |")
    print(f"| events appended by the producer (XADD, pipelines of {args.batch}) | {sent.value / args.seconds:,.0f}/s |")


if __name__ == "__main__":
    main()
