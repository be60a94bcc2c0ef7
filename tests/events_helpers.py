"""Driving a run through its life with the real scripts (dispatch, claim, progress, complete), and reading SSE.

What the scheduler and a worker do to a run, without RQ or ComfyUI: each step writes the run's
events exactly as production does, so event-stream tests see real streams. Works on fakeredis
and on a real redis-server alike.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import uvicorn
from fastapi import FastAPI
from redis import Redis

from dispatcher.lease import Lease, Leases
from dispatcher.redis_server import free_port
from dispatcher.runs import Output, Run, RunStatus, RunStore
from dispatcher.scheduling.dispatch import Dispatcher


class Life:
    """The steps of one run's life; call them in order."""

    def __init__(self, redis: Redis, run_id: str) -> None:
        self.redis = redis
        self.run_id = run_id
        self.runs = RunStore(redis)
        self.leases = Leases(redis, ttl_seconds=30, run_ttl_seconds=3600)
        self.lease: Lease | None = None

    def run(self) -> Run:
        run = self.runs.get(self.run_id)
        assert run is not None
        return run

    def start(self, worker: str = "w1") -> Life:
        Dispatcher(self.redis, dispatch_rate=0, max_running=0).take(1000)
        claim = self.leases.claim(self.run_id, worker, self.run().dispatches, comfyui_url="http://10.0.0.7:8188")
        assert claim.lease is not None, claim
        self.lease = claim.lease
        return self

    def progress(self, value: float, node: str) -> Life:
        assert self.lease is not None and self.leases.update(self.lease, progress=repr(value), node=node)
        return self

    def succeed(self, *filenames: str) -> Life:
        outputs = [Output("3", name, "image/png", 10, f"{self.run_id}/1/{name}") for name in filenames]
        assert self.lease is not None
        assert self.leases.complete(self.lease, self.run(), RunStatus.SUCCEEDED, outputs=outputs)
        return self

    def fail(self, message: str) -> Life:
        assert self.lease is not None
        error = {"type": "execution_error", "message": message}
        assert self.leases.complete(self.lease, self.run(), RunStatus.FAILED, error=error)
        return self

    def whole(self, *filenames: str) -> Life:
        """Start, two nodes of progress, success with ``filenames`` (default one PNG)."""
        return self.start().progress(0.5, "1").progress(0.9, "2").succeed(*(filenames or ("out.png",)))


@dataclass
class SseEvent:
    """One parsed server-sent event (or comment)."""

    event: str = "message"
    data: str = ""
    id: str | None = None
    comments: list[str] = field(default_factory=list)

    def json(self) -> Any:
        return json.loads(self.data)


def parse_sse(lines: Iterable[str]) -> Iterator[SseEvent]:
    """Events of a text/event-stream, line by line as they arrive (comments are events with only ``comments``)."""
    current = SseEvent()
    data: list[str] = []
    seen = False
    for line in lines:
        if line == "":
            if seen:
                current.data = "\n".join(data)
                yield current
            current, data, seen = SseEvent(), [], False
            continue
        seen = True
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "":
            current.comments.append(value)
        elif name == "event":
            current.event = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            current.id = value
    if seen:
        current.data = "\n".join(data)
        yield current


class ApiServer:
    """An app served by uvicorn on a free loopback port, in a thread of this process (so tests may patch it)."""

    def __init__(self, app: FastAPI) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # An event stream left open must not hold the shutdown forever.
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", log_config=None, timeout_graceful_shutdown=2
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name=f"uvicorn-{self.port}", daemon=True)

    def __enter__(self) -> ApiServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:  # start-up probe only
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"uvicorn did not start on port {self.port}")
            time.sleep(0.01)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.server.should_exit = True
        self.thread.join(10)
