"""Helpers of the API tests: the test client, problem checks, and what a worker writes to Redis."""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import asdict
from typing import Any

from dispatcher import keys
from dispatcher.connections import Connections
from dispatcher.runs import Output
from dispatcher.storage import MemoryStore

# Starlette 1.x prefers httpx2 and warns once, at import, when it falls back to httpx (our dev dependency).
with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)
    from fastapi.testclient import TestClient as TestClient

PROBLEM_JSON = "application/problem+json"


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    """Check ``response`` is an RFC 9457 problem with ``status``; return its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert {"type", "title", "detail", "instance"} <= set(body)
    return body


def finish_run(
    conns: Connections,
    run_id: str,
    *,
    status: str = "succeeded",
    outputs: list[Output] | None = None,
    error: dict[str, Any] | None = None,
) -> None:
    """Do what a worker does when a run ends: write the terminal record, then announce it."""
    now = time.time()
    conns.text.hset(
        keys.run(run_id),
        mapping={
            "status": status,
            "started_at": repr(now - 2.5),
            "finished_at": repr(now),
            "attempts": "1",
            "progress": "1.0" if status == "succeeded" else "0.5",
            "outputs": json.dumps([asdict(o) for o in outputs or []]),
            "error": json.dumps(error) if error is not None else "",
        },
    )
    for priority in ("high", "normal", "low"):
        conns.text.zrem(keys.queued(priority), run_id)
    conns.text.publish(keys.run_done_channel(run_id), status)


def start_run(conns: Connections, run_id: str, *, node: str = "", progress: float = 0.0) -> None:
    """Do what a worker does when it claims a run."""
    for priority in ("high", "normal", "low"):
        conns.text.zrem(keys.queued(priority), run_id)
    conns.text.hset(
        keys.run(run_id),
        mapping={"status": "running", "started_at": repr(time.time()), "node": node, "progress": repr(progress)},
    )


def store_output(
    store: MemoryStore, run_id: str, filename: str, data: bytes, content_type: str = "image/png"
) -> Output:
    key = f"{run_id}/1/{filename}"
    size = store.put(key, [data], content_type)
    return Output(node="9", filename=filename, content_type=content_type, size=size, key=key)


def beat(conns: Connections, name: str, *, healthy: bool, current_run: str = "", age: float = 0.0) -> None:
    """Write what a worker's heartbeat writes."""
    now = time.time() - age
    conns.text.hset(
        keys.worker(name),
        mapping={
            "name": name,
            "comfyui_url": f"http://{name}:8188",
            "comfyui_healthy": "1" if healthy else "0",
            "current_run": current_run,
            "last_seen": repr(now),
            "queue": "comfy-dispatch",
        },
    )
    conns.text.zadd(keys.WORKERS, {name: now})
