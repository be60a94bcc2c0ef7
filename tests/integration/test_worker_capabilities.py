"""A worker reads what its ComfyUI can run and publishes it through its heartbeat (real redis-server; the fake
ComfyUI process, or a stub ComfyUI in this process where a test needs ComfyUI to answer oddly)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from prometheus_client import REGISTRY

from dispatcher import keys
from dispatcher.fake_comfyui.models import DEFAULT_CHECKPOINTS, MODEL_FOLDERS
from dispatcher.routing.store import CapabilityStore, capability_keys, definitions_key
from dispatcher.runs import Run
from dispatcher.scheduling.dispatch import Dispatcher
from dispatcher.submit import Submitter
from dispatcher.workflows import Registry
from tests.integration.conftest import ContextFactory
from tests.support import FakeComfy
from worker import capabilities, heartbeat
from worker.context import WorkerContext
from worker.runner import RunExecution

EMPTY_IMAGE_INFO = {"EmptyImage": {"input": {"required": {"width": ["INT", {}]}}, "name": "EmptyImage"}}
CHECKPOINT_LOADER_INFO = {
    "CheckpointLoaderSimple": {"input": {"required": {"ckpt_name": [["a.safetensors"], {}]}}},
}


class StubComfy(ThreadingHTTPServer):
    """A ComfyUI that answers each GET path with what ``routes`` holds (status, JSON body), 404 otherwise."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), StubHandler)
        self.routes: dict[str, tuple[int, Any]] = {}
        self.url = f"http://127.0.0.1:{self.server_address[1]}"

    def answer(self, object_info: dict[str, Any], models: dict[str, list[str]] | None) -> None:
        """Answer as a healthy ComfyUI with these nodes and model folders (None: one too old for /models)."""
        self.routes = {"/system_stats": (200, {"system": {}, "devices": []}), "/object_info": (200, object_info)}
        if models is not None:
            self.routes["/models"] = (200, list(models))
            self.routes.update({f"/models/{folder}": (200, files) for folder, files in models.items()})


class StubHandler(BaseHTTPRequestHandler):
    server: StubComfy

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        status, body = self.server.routes.get(self.path, (404, None))
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        pass


@pytest.fixture
def stub() -> Iterator[StubComfy]:
    server = StubComfy()
    server.answer(EMPTY_IMAGE_INFO, {"checkpoints": ["a.safetensors"], "loras": []})
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def fresh(ctx: WorkerContext) -> WorkerContext:
    """As a worker just started: its ComfyUI not yet seen healthy (the fixture marks it healthy)."""
    ctx.state.healthy.clear()
    return ctx


def record(ctx: WorkerContext) -> dict[str, str]:
    state: dict[str, str] = ctx.conns.text.hgetall(keys.worker(ctx.name))  # type: ignore[assignment]
    return state


def published(ctx: WorkerContext, digest: str) -> Any:
    return CapabilityStore(ctx.conns.text, ttl_seconds=30).get_many([digest]).get(digest)


# --- reading ComfyUI ----------------------------------------------------------------------------------------


def test_the_client_reads_the_fakes_nodes_and_model_folders(worker_context: ContextFactory) -> None:
    client = worker_context().client
    assert {"EmptyImage", "CheckpointLoaderSimple"} <= set(client.object_info())
    folders = client.model_folders()
    assert folders is not None and list(folders) == list(MODEL_FOLDERS)
    assert folders["checkpoints"] == list(DEFAULT_CHECKPOINTS) and folders["loras"] == []


def test_a_comfyui_without_model_folders_is_read_from_its_loaders(
    worker_context: ContextFactory, stub: StubComfy
) -> None:
    stub.answer({**EMPTY_IMAGE_INFO, **CHECKPOINT_LOADER_INFO}, None)
    client = worker_context(comfyui_url=stub.url).client
    assert client.model_folders() is None
    caps, definitions = capabilities.discover(client)
    assert caps.nodes == {"EmptyImage", "CheckpointLoaderSimple"}
    assert definitions == {**EMPTY_IMAGE_INFO, **CHECKPOINT_LOADER_INFO}
    assert caps.model_counts() == {"checkpoints": 1}


# --- publishing through the heartbeat -------------------------------------------------------------------


def test_the_first_beat_names_the_published_set(worker_context: ContextFactory) -> None:
    ctx = fresh(worker_context())
    heartbeat.beat(ctx)
    state = record(ctx)
    assert state["state"] == "idle" and state["caps"] == ctx.state.caps != ""
    assert state["checkpoint"] == ""
    caps = published(ctx, ctx.state.caps)
    assert caps is not None and caps.models["checkpoints"] == set(DEFAULT_CHECKPOINTS)
    for key in (*capability_keys(ctx.state.caps), definitions_key(ctx.state.caps)):
        assert 0 < ctx.conns.text.ttl(key) <= 30
    # The node definitions go with the set: what converts a UI-format workflow on the API's side.
    definitions = CapabilityStore(ctx.conns.text, ttl_seconds=30).definitions([ctx.state.caps])
    assert "EmptyImage" in definitions and "CheckpointLoaderSimple" in definitions


def test_a_read_at_start_is_not_repeated_by_the_first_beat(worker_context: ContextFactory, stub: StubComfy) -> None:
    ctx = fresh(worker_context(comfyui_url=stub.url))
    capabilities.refresh(ctx)  # what run_worker does before the first beat
    first = ctx.state.caps
    stub.answer({**EMPTY_IMAGE_INFO, **CHECKPOINT_LOADER_INFO}, {"checkpoints": ["a.safetensors"]})
    heartbeat.beat(ctx)
    assert record(ctx)["caps"] == first  # read a moment ago: not read again until due


def test_each_beat_renews_the_sets_expiry_and_a_lost_set_is_published_again(worker_context: ContextFactory) -> None:
    ctx = fresh(worker_context())
    heartbeat.beat(ctx)
    record_key, _ = capability_keys(ctx.state.caps)
    ctx.conns.text.expire(record_key, 3)
    heartbeat.beat(ctx)
    assert ctx.conns.text.ttl(record_key) > 3
    ctx.conns.text.delete(*capability_keys(ctx.state.caps))  # Redis restarted empty, say
    heartbeat.beat(ctx)  # finds it gone
    heartbeat.beat(ctx)  # publishes it again
    assert published(ctx, ctx.state.caps) is not None


def test_a_failed_read_keeps_the_worker_beating_and_is_tried_at_each_beat(
    worker_context: ContextFactory, stub: StubComfy, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = fresh(worker_context(comfyui_url=stub.url))
    stub.routes["/object_info"] = (500, None)  # ComfyUI answers its health check, then fails the read
    with caplog.at_level(logging.WARNING, logger="worker.capabilities"):
        heartbeat.beat(ctx)
        heartbeat.beat(ctx)
    assert record(ctx)["state"] == "idle" and record(ctx)["caps"] == ""
    assert len([r for r in caplog.records if "could not read what ComfyUI" in r.message]) == 1  # once, not per beat
    stub.answer(EMPTY_IMAGE_INFO, {"checkpoints": ["a.safetensors"]})
    heartbeat.beat(ctx)
    assert record(ctx)["caps"] == ctx.state.caps != ""
    assert not ctx.state.caps_failing


@pytest.mark.parametrize("failure", [(500, None), (200, ["not", "an", "object"]), (200, {"X": {"input": []}})])
def test_no_answer_of_comfyui_stops_the_heartbeat(
    worker_context: ContextFactory, stub: StubComfy, failure: tuple[int, Any]
) -> None:
    ctx = fresh(worker_context(comfyui_url=stub.url))
    stub.routes["/object_info"] = failure
    heartbeat.beat(ctx)
    assert record(ctx)["state"] == "idle"


def test_a_comfyui_that_comes_back_is_read_again(worker_context: ContextFactory, stub: StubComfy) -> None:
    ctx = fresh(worker_context(comfyui_url=stub.url))
    heartbeat.beat(ctx)
    before = ctx.state.caps
    stub.routes = {}  # down: its health check fails
    heartbeat.beat(ctx)
    assert record(ctx)["state"] == "paused"
    stub.answer({**EMPTY_IMAGE_INFO, **CHECKPOINT_LOADER_INFO}, {"checkpoints": ["a.safetensors", "b.safetensors"]})
    heartbeat.beat(ctx)  # back, with a custom node more and another checkpoint
    assert record(ctx)["state"] == "idle" and record(ctx)["caps"] == ctx.state.caps != before
    caps = published(ctx, ctx.state.caps)
    assert caps is not None and "CheckpointLoaderSimple" in caps.nodes and caps.model_counts() == {"checkpoints": 2}


def test_the_set_is_read_again_once_it_is_old(worker_context: ContextFactory, stub: StubComfy) -> None:
    ctx = fresh(worker_context(comfyui_url=stub.url, capabilities_refresh_seconds=60))
    heartbeat.beat(ctx)
    before = ctx.state.caps
    stub.answer(EMPTY_IMAGE_INFO, {"checkpoints": ["a.safetensors", "new.safetensors"]})
    heartbeat.beat(ctx)
    assert ctx.state.caps == before  # not due yet
    assert ctx.state.caps_read_at is not None
    ctx.state.caps_read_at -= 61
    heartbeat.beat(ctx)
    assert record(ctx)["caps"] == ctx.state.caps != before


# --- the checkpoint of the last run posted -------------------------------------------------------------


def switches() -> float:
    return REGISTRY.get_sample_value("comfy_dispatch_model_switches_total") or 0.0


def run_txt2img(ctx: WorkerContext, checkpoint: str) -> Run:
    """Execute a txt2img run that loads ``checkpoint`` as the API records it (``Run.checkpoint``)."""
    body = {"params": {"prompt": "a cat", "checkpoint": checkpoint, "steps": 1, "width": 64, "height": 64}}
    run = Submitter(ctx.conns.text, Registry.load(ctx.settings.workflows_dir), ctx.settings).submit("txt2img", body)
    ctx.conns.text.hset(keys.run(run.id), "checkpoint", f"checkpoints/{checkpoint}")
    Dispatcher(ctx.conns.text, dispatch_rate=0, max_running=0).take(10)
    dispatched = ctx.runs.get(run.id)
    assert dispatched is not None and dispatched.checkpoint == f"checkpoints/{checkpoint}"
    assert RunExecution(ctx, run.id, dispatched.dispatches).execute() == "succeeded"
    return dispatched


def test_a_posted_run_sets_the_checkpoint_and_a_change_counts_a_switch(
    worker_context: ContextFactory, fake_comfyui: FakeComfy
) -> None:
    ctx = worker_context()
    first, second = DEFAULT_CHECKPOINTS[-2:]
    start = switches()
    run_txt2img(ctx, first)
    heartbeat.beat(ctx)
    assert record(ctx)["checkpoint"] == f"checkpoints/{first}"
    assert switches() == start  # the first model loaded is no switch
    run_txt2img(ctx, first)
    assert switches() == start
    run_txt2img(ctx, second)
    heartbeat.beat(ctx)
    assert record(ctx)["checkpoint"] == f"checkpoints/{second}"
    assert switches() == start + 1
    assert fake_comfyui.stats()["executed"] == 3


def test_a_run_without_a_model_leaves_the_checkpoint(worker_context: ContextFactory) -> None:
    ctx = worker_context()
    capabilities.note_posted(ctx, "checkpoints/a.safetensors")
    capabilities.note_posted(ctx, "")
    assert ctx.state.checkpoint == "checkpoints/a.safetensors"
