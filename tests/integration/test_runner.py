"""A worker's run execution against a real redis-server and a fake ComfyUI process."""

from __future__ import annotations

import io
import json
import threading
import time
from typing import Any

import pytest
from PIL import Image

from dispatcher import keys
from dispatcher.runs import Run, RunStatus
from dispatcher.scheduling.dispatch import Dispatcher
from dispatcher.submit import Submitter
from dispatcher.workflows import Registry
from tests.integration.conftest import ContextFactory
from tests.support import FakeComfy
from worker import runner
from worker.context import WorkerContext
from worker.keeper import LeaseKeeper
from worker.runner import RunExecution


@pytest.fixture
def ctx(worker_context: ContextFactory) -> WorkerContext:
    return worker_context()


def submit(ctx: WorkerContext, workflow: str, body: dict[str, Any]) -> Run:
    """Queue a run and dispatch it, as API and scheduler do; returns it as dispatched."""
    run = Submitter(ctx.conns.text, Registry.load(ctx.settings.workflows_dir), ctx.settings).submit(workflow, body)
    redispatch(ctx)
    return final(ctx, run.id)


def redispatch(ctx: WorkerContext) -> None:
    Dispatcher(ctx.conns.text, dispatch_rate=0, max_running=0).take(10)


def execute(ctx: WorkerContext, run_id: str) -> str:
    """What the worker does with the RQ job of the run's current dispatch."""
    return RunExecution(ctx, run_id, final(ctx, run_id).dispatches).execute()


def final(ctx: WorkerContext, run_id: str) -> Run:
    run = ctx.runs.get(run_id)
    assert run is not None
    return run


def pixel(ctx: WorkerContext, key: str) -> tuple[int, ...]:
    with ctx.store.open(key) as fh:
        image = Image.open(io.BytesIO(fh.read())).convert("RGB")
    return tuple(image.getpixel((0, 0)))  # type: ignore[arg-type]


def test_invert_run_stores_its_own_inverted_image(ctx: WorkerContext, fake_comfyui: FakeComfy) -> None:
    run = submit(ctx, "invert", {"params": {"width": 8, "height": 8, "color": 0xFF0000}})
    assert execute(ctx, run.id) == "succeeded"
    done = final(ctx, run.id)
    assert done.status is RunStatus.SUCCEEDED and done.progress == 1.0 and done.attempts == 1
    (output,) = done.outputs
    assert output.node == "3" and output.content_type == "image/png" and run.id in output.filename
    assert output.key.startswith(f"{run.id}/1/")
    assert pixel(ctx, output.key) == (0, 255, 255)
    assert fake_comfyui.stats()["executed"] == 1


def test_a_second_delivery_does_not_execute_again(ctx: WorkerContext, fake_comfyui: FakeComfy) -> None:
    run = submit(ctx, "invert", {"params": {"width": 8, "height": 8}})
    assert execute(ctx, run.id) == "succeeded"
    assert execute(ctx, run.id) == "done"
    assert fake_comfyui.stats()["posted"] == 1


def test_a_rejected_graph_fails_at_once_with_node_errors(ctx: WorkerContext, fake_comfyui: FakeComfy) -> None:
    run = submit(ctx, "invert", {"params": {"width": 8, "height": 8}})
    graph = ctx.runs.graph(run.id)
    graph["5"] = {"class_type": "NoSuchNode", "inputs": {}}
    ctx.conns.text.set(keys.run_graph(run.id), json.dumps(graph))
    assert execute(ctx, run.id) == "failed"
    done = final(ctx, run.id)
    assert done.status is RunStatus.FAILED and done.attempts == 1
    assert done.error is not None and done.error["type"] == "validation_error"
    assert done.error["error"]["type"] == "invalid_prompt" and "node_errors" in done.error
    assert ctx.conns.text.zcard(keys.DEAD_LETTER) == 0


def test_a_node_that_raises_fails_the_run(ctx: WorkerContext, fake_comfyui: FakeComfy) -> None:
    fake_comfyui.control(fail_node_type="ImageInvert", exception_type="ValueError", exception_message="bad pixels")
    run = submit(ctx, "invert", {"params": {"width": 8, "height": 8}})
    assert execute(ctx, run.id) == "failed"
    error = final(ctx, run.id).error
    assert error is not None and error["node_type"] == "ImageInvert" and "bad pixels" in error["message"]


def test_transient_failures_are_retried(ctx: WorkerContext, fake_comfyui: FakeComfy) -> None:
    fake_comfyui.control(fail_node_type="ImageInvert", exception_type="torch.OutOfMemoryError", exception_message="OOM")
    run = submit(ctx, "invert", {"params": {"width": 8, "height": 8}})
    assert execute(ctx, run.id) == "retrying"
    queued = final(ctx, run.id)
    assert queued.status is RunStatus.QUEUED and queued.attempts == 1 and queued.error is not None
    fake_comfyui.reset()
    time.sleep(0.01)  # the (tiny) backoff
    redispatch(ctx)
    assert execute(ctx, run.id) == "succeeded"
    assert final(ctx, run.id).attempts == 2


def test_a_dropped_websocket_is_opened_again_and_the_run_goes_on(ctx: WorkerContext, fake_comfyui: FakeComfy) -> None:
    """ComfyUI closes the worker's socket mid-run but still runs the prompt: the worker listens again, finds the
    prompt in /queue and follows it to its end; nothing is retried and the prompt executes once."""
    fake_comfyui.control(drop_ws=True, hang=True)  # hang: the prompt is still running when the socket is gone
    run = submit(ctx, "invert", {"params": {"width": 8, "height": 8, "color": 0x0000FF}})
    result: list[str] = []
    thread = threading.Thread(target=lambda: result.append(execute(ctx, run.id)))
    thread.start()
    deadline = time.monotonic() + 10
    while fake_comfyui.stats()["started"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)  # the drop and the reconnection
    fake_comfyui.control(hang=False)
    thread.join(15)
    assert result == ["succeeded"]
    done = final(ctx, run.id)
    assert done.attempts == 1 and pixel(ctx, done.outputs[0].key) == (255, 255, 0)
    assert fake_comfyui.stats()["executed"] == 1 and fake_comfyui.stats()["posted"] == 1


def test_a_retry_takes_a_finished_prompt_from_history(ctx: WorkerContext, fake_comfyui: FakeComfy) -> None:
    """Attempt 1 died after ComfyUI finished: attempt 2 must not post the graph again."""
    run = submit(ctx, "invert", {"params": {"width": 8, "height": 8, "color": 0x00FF00}})
    claim = ctx.leases.claim(run.id, "dead-worker", run.dispatches)
    assert claim.lease is not None
    ctx.client.post_prompt(ctx.runs.graph(run.id), prompt_id=run.prompt_id, client_id="someone")
    deadline = time.monotonic() + 10
    while ctx.client.history(run.prompt_id) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    ctx.conns.text.delete(keys.run_lease(run.id))  # the dead worker's lease expires
    ctx.reaper.reap()
    time.sleep(0.01)
    redispatch(ctx)
    assert execute(ctx, run.id) == "succeeded"
    done = final(ctx, run.id)
    assert done.attempts == 2 and pixel(ctx, done.outputs[0].key) == (255, 0, 255)
    assert fake_comfyui.stats()["posted"] == 1


def test_a_worker_that_loses_its_lease_stops_and_writes_nothing(ctx: WorkerContext, fake_comfyui: FakeComfy) -> None:
    fake_comfyui.control(hang=True)
    run = submit(ctx, "invert", {"params": {"width": 8, "height": 8}})
    keeper = LeaseKeeper(ctx.leases, ctx.pipeline, ttl_seconds=0.3)  # renews (and notices a loss) every 0.1 s
    keeper.start()
    result: list[str] = []
    thread = threading.Thread(target=lambda: result.append(RunExecution(ctx, run.id, run.dispatches).execute()))
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while fake_comfyui.stats()["started"] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        ctx.conns.text.set(keys.run_lease(run.id), "other-worker|2")  # someone else took over
        thread.join(15)
    finally:
        keeper.stopped.set()
    assert result == ["lease-lost"]
    run_now = final(ctx, run.id)
    assert run_now.status is RunStatus.RUNNING and run_now.outputs == []
    assert fake_comfyui.stats()["executed"] == 0 and fake_comfyui.stats()["interrupted"] == 1


def test_a_run_past_its_timeout_is_interrupted_and_fails(ctx: WorkerContext, fake_comfyui: FakeComfy) -> None:
    fake_comfyui.control(hang=True)
    run = submit(ctx, "invert", {"params": {"width": 8, "height": 8}})
    ctx.conns.text.hset(keys.run(run.id), "timeout", "0.5")
    assert execute(ctx, run.id) == "failed"
    error = final(ctx, run.id).error
    assert error is not None and error["type"] == "RunTimeout"
    queue = ctx.client.queue()
    assert run.prompt_id not in queue


def test_cancel_of_a_running_run_interrupts_comfyui(ctx: WorkerContext, fake_comfyui: FakeComfy) -> None:
    from dispatcher.cancel import Canceller
    from worker.cancel_watch import CancelWatcher

    fake_comfyui.control(hang=True)
    run = submit(ctx, "invert", {"params": {"width": 8, "height": 8}})
    watcher = CancelWatcher(ctx)
    watcher.start()
    try:
        result: list[str] = []
        thread = threading.Thread(target=lambda: result.append(RunExecution(ctx, run.id, run.dispatches).execute()))
        thread.start()
        deadline = time.monotonic() + 10
        while fake_comfyui.stats()["started"] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)  # let the watcher's subscription settle
        assert Canceller(ctx.conns.text, run_ttl_seconds=60).cancel(final(ctx, run.id)) == "canceling"
        thread.join(10)
    finally:
        watcher.stopped.set()
        watcher.join(5)
    assert result == ["canceled"]
    assert final(ctx, run.id).status is RunStatus.CANCELED
    assert fake_comfyui.stats()["interrupted"] == 1


def test_a_run_popped_while_comfyui_is_down_is_handed_back(ctx: WorkerContext, fake_comfyui: FakeComfy) -> None:
    run = submit(ctx, "invert", {"params": {"width": 8, "height": 8}})
    ctx.state.healthy.clear()
    ctx.client.base_url = "http://127.0.0.1:9"  # nothing listens there
    assert execute(ctx, run.id) == "paused"
    back = final(ctx, run.id)
    assert back.status is RunStatus.QUEUED and back.attempts == 0
    assert ctx.runs.queue_position(back) == 0


@pytest.mark.parametrize("others", [0, 2])
def test_a_workers_last_run_tells_the_scheduler_from_the_script_that_ends_it(
    ctx: WorkerContext, fake_comfyui: FakeComfy, monkeypatch: pytest.MonkeyPatch, others: int
) -> None:
    run = submit(ctx, "invert", {"params": {"width": 8, "height": 8}})
    for i in range(others):  # runs in flight on other workers: one may wait behind another, to move here
        ctx.conns.text.zadd(keys.INFLIGHT, {f"other{i}": i})
    told: list[object] = []
    monkeypatch.setattr(runner, "tell_idle", told.append)  # a round trip of its own: not taken
    pubsub = ctx.conns.text.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(keys.SCHEDULER_WAKE)
    try:
        assert execute(ctx, run.id) == "succeeded"
        messages = [pubsub.get_message(timeout=0.2) for _ in range(3)]
    finally:
        pubsub.close()
    assert told == []
    assert [m["data"] for m in messages if m is not None] == (["idle"] if others else [])
