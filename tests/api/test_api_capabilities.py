"""What the workers' ComfyUIs can run, as the API shows it: GET /v1/workers and GET /v1/workflows/{id}."""

from __future__ import annotations

import json
from typing import Any

from dispatcher import keys
from dispatcher.connections import Connections
from dispatcher.fake_comfyui.models import DEFAULT_CHECKPOINTS, model_folders
from dispatcher.fake_comfyui.schemas import Catalog, build_schemas
from dispatcher.routing.capabilities import Capabilities, from_comfyui
from dispatcher.routing.store import CapabilityStore
from tests.api.helpers import TestClient, beat


def fake_set(**models: tuple[str, ...]) -> Capabilities:
    """The capabilities of a fake ComfyUI started with ``--models`` ``models``."""
    folders = model_folders(models)
    schemas = build_schemas(Catalog((), folders))
    info: dict[str, Any] = json.loads(json.dumps({name: schema.info() for name, schema in schemas.items()}))
    return from_comfyui(info, folders)


def beat_with(conns: Connections, name: str, caps: Capabilities | None, *, healthy: bool = True, **fields: str) -> str:
    """A worker's heartbeat naming the set ``caps`` (published), or none; returns the digest."""
    beat(conns, name, healthy=healthy)
    digest = CapabilityStore(conns.text, ttl_seconds=30).publish(caps) if caps is not None else ""
    conns.text.hset(keys.worker(name), mapping={"caps": digest, **fields})
    return digest


def test_workers_show_what_their_comfyui_can_run_and_ran_last(client: TestClient, fake_conns: Connections) -> None:
    caps = fake_set(checkpoints=("a.safetensors", "c.safetensors"), loras=("l.safetensors",))
    digest = beat_with(fake_conns, "gpu-a", caps, checkpoint="checkpoints/a.safetensors")
    beat_with(fake_conns, "gpu-b", None)  # has not read its ComfyUI yet
    beat(fake_conns, "gpu-c", healthy=True)
    fake_conns.text.hset(keys.worker("gpu-c"), "caps", "expired-digest")  # its set is gone from Redis
    a, b, c = client.get("/v1/workers").json()["workers"]
    assert a["capabilities"] == digest
    assert a["models"] == {"checkpoints": 2, "loras": 1}
    assert a["nodes"] == len(caps.nodes) > 10
    assert a["checkpoint"] == "checkpoints/a.safetensors"
    assert (b["capabilities"], b["models"], b["nodes"], b["checkpoint"]) == (None, None, None, None)
    assert c["capabilities"] == "expired-digest" and c["models"] is None and c["nodes"] is None


def test_the_flask_seeds_worker_list_shows_the_same(client: TestClient, fake_conns: Connections) -> None:
    digest = beat_with(fake_conns, "gpu-a", fake_set())
    (worker,) = client.get("/api/test_comfy").json()["response"]["workers"]
    assert worker["capabilities"] == digest and worker["models"] == {"checkpoints": len(DEFAULT_CHECKPOINTS)}


def test_capable_workers_count_the_ready_workers_that_have_what_the_defaults_need(
    client: TestClient, fake_conns: Connections
) -> None:
    beat_with(fake_conns, "gpu-a", fake_set())  # SD 1.5's checkpoints: txt2img's default
    beat_with(fake_conns, "gpu-b", fake_set(checkpoints=("other.safetensors",)))
    beat_with(fake_conns, "gpu-c", fake_set(), healthy=False)  # paused: not ready
    beat_with(fake_conns, "gpu-d", None)
    assert client.get("/v1/workflows/txt2img").json()["capable_workers"] == 1  # a required prompt needs no model
    assert client.get("/v1/workflows/invert").json()["capable_workers"] == 2


def test_capable_workers_are_zero_when_no_comfyui_has_the_nodes(client: TestClient, fake_conns: Connections) -> None:
    lean = Capabilities(frozenset({"EmptyImage", "SaveImage"}), {"checkpoints": frozenset({"a.safetensors"})})
    beat_with(fake_conns, "gpu-a", lean)
    assert client.get("/v1/workflows/invert").json()["capable_workers"] == 0


def test_capable_workers_are_unknown_before_any_worker_published(client: TestClient, fake_conns: Connections) -> None:
    beat_with(fake_conns, "gpu-a", None)
    assert client.get("/v1/workflows/invert").json()["capable_workers"] is None
