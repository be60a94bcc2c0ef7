"""Helpers of the API tests: the test client, problem checks, the backlog, and what a worker writes to Redis."""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import asdict
from typing import Any

from dispatcher import keys
from dispatcher.apikeys import ApiKeyStore
from dispatcher.connections import Connections
from dispatcher.runs import PRIORITIES, Output, RunStore
from dispatcher.settings import Settings
from dispatcher.storage import MemoryStore
from dispatcher.tenants import TenantStore

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


class Backlog:
    """What the API queued: runs waiting in the tenants' backlogs (the scheduler hands them to RQ later)."""

    def __init__(self, conns: Connections) -> None:
        self.conns = conns

    @property
    def count(self) -> int:
        """Queued runs over every tenant and priority."""
        return sum(RunStore(self.conns.text).queue_depths().values())

    @property
    def records(self) -> int:
        """Run records stored, queued or not (not their graphs, whose keys match the same pattern)."""
        names: list[str] = self.conns.text.keys(keys.run("*"))  # type: ignore[assignment]
        return sum(1 for name in names if name.count(":") == keys.run("x").count(":"))

    @property
    def empty(self) -> bool:
        """Nothing was accepted: no queued run and no run record."""
        return self.count == 0 and self.records == 0


def tenant_with_key(conns: Connections, tenant: str, scopes: str = "submit,read", **limits: Any) -> str:
    """Create ``tenant`` (with ``limits``) and a key of it with ``scopes``; return the clear key."""
    TenantStore(conns.text, Settings()).set(tenant, **limits)
    _, key = ApiKeyStore(conns.text).create(tenant, scopes)
    return key


def _unqueue(conns: Connections, run_id: str) -> None:
    # What the scheduler does when it hands a run to a worker: out of its tenant's backlog.
    tenant = conns.text.hget(keys.run(run_id), "tenant") or "default"
    for priority in PRIORITIES:
        conns.text.zrem(keys.backlog(str(tenant), priority), run_id)


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
    _unqueue(conns, run_id)
    # As the scripts that end a run announce it: the record in the message (dispatcher.events' announce).
    record = conns.text.hgetall(keys.run(run_id))
    conns.text.publish(keys.run_done_channel(run_id), json.dumps({"status": status, "run": record}))


def start_run(conns: Connections, run_id: str, *, node: str = "", progress: float = 0.0) -> None:
    """Do what the scheduler and a worker do when the run starts."""
    _unqueue(conns, run_id)
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


def beat(
    conns: Connections,
    name: str,
    *,
    healthy: bool,
    current_run: str = "",
    age: float = 0.0,
    runs: tuple[str, ...] = (),
    slots: int = 2,
) -> None:
    """Write what a worker's heartbeat writes (``runs``: all it holds; ``current_run`` is among them)."""
    now = time.time() - age
    held = runs or ((current_run,) if current_run else ())
    conns.text.hset(
        keys.worker(name),
        mapping={
            "name": name,
            "comfyui_url": f"http://{name}:8188",
            "comfyui_healthy": "1" if healthy else "0",
            "state": "busy" if current_run else ("idle" if healthy else "paused"),
            "current_run": current_run,
            "runs": ",".join(held),
            "slots": str(slots),
            "last_seen": repr(now),
            "queue": "comfy-dispatch",
        },
    )
    conns.text.zadd(keys.WORKERS, {name: now})
