"""GET /v1/queues, /v1/workers, /healthz, /readyz."""

from __future__ import annotations

import time

from dispatcher import keys
from dispatcher.connections import Connections
from tests.api.helpers import TestClient, beat


def test_empty_queues(client: TestClient) -> None:
    empty = {"queues": {"high": 0, "normal": 0, "low": 0}, "total": 0, "waiting_for_capability": 0}
    assert client.get("/v1/queues").json() == empty


def test_workers_health(client: TestClient, fake_conns: Connections) -> None:
    beat(fake_conns, "gpu-b", healthy=True, current_run="abc123", runs=("abc123", "def456"), slots=3)
    beat(fake_conns, "gpu-a", healthy=False)
    fake_conns.text.zadd(keys.WORKERS, {"gpu-gone": time.time() - 60})  # its hash expired
    fake_conns.text.zadd(keys.WORKERS, {"gpu-ancient": time.time() - 7200})  # silent for 2 h: not listed
    workers = client.get("/v1/workers").json()["workers"]
    assert [w["name"] for w in workers] == ["gpu-a", "gpu-b", "gpu-gone"]
    a, b, gone = workers
    assert a == {
        "name": "gpu-a",
        "comfyui_url": "http://gpu-a:8188",
        "health": "unhealthy",
        "state": "paused",
        "current_run": None,
        "runs": [],
        "slots": 2,
        "last_seen": a["last_seen"],
        "capabilities": None,
        "models": None,
        "nodes": None,
        "checkpoint": None,
        "warmup_error": None,
    }
    assert b["health"] == "healthy" and b["state"] == "busy" and b["current_run"] == "abc123"
    assert b["runs"] == ["abc123", "def456"] and b["slots"] == 3  # one executing, one posted behind it
    assert gone["health"] == "offline" and gone["state"] == "offline"
    assert gone["comfyui_url"] is None and gone["current_run"] is None
    assert all(w["last_seen"].endswith("Z") for w in workers)


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready"}
