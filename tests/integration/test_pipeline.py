"""A worker holding several runs at once (its pipeline), against a real redis-server and a fake ComfyUI process.

The next run is posted to ComfyUI while one executes; each keeps its own lease and ends once; a run's time
limit counts from its own execution_start; a cancel removes a run that waits in ComfyUI's queue before it
ever executes; GPU time comes from ComfyUI's own timestamps.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from dispatcher import keys
from dispatcher.cancel import Canceller
from dispatcher.runs import Run, RunStatus
from tests.integration.conftest import ContextFactory
from tests.integration.test_runner import final, submit
from tests.support import FakeComfy
from worker import follow
from worker.cancel_watch import CancelWatcher
from worker.context import WorkerContext
from worker.runner import RunExecution


@pytest.fixture
def ctx(worker_context: ContextFactory) -> WorkerContext:
    return worker_context(pipeline_depth=3)


def sleeping(ctx: WorkerContext, seconds: float, *, timeout: float | None = None) -> Run:
    """A run whose graph sleeps ``seconds`` in ComfyUI (TestSleep) before it saves its image."""
    run = submit(ctx, "invert", {"params": {"width": 8, "height": 8}})
    graph = ctx.runs.graph(run.id)
    graph["4"] = {"class_type": "TestSleep", "inputs": {"value": ["2", 0], "seconds": seconds}}
    graph["3"]["inputs"]["images"] = ["4", 0]
    ctx.conns.text.set(keys.run_graph(run.id), json.dumps(graph))
    if timeout is not None:
        ctx.conns.text.hset(keys.run(run.id), "timeout", repr(timeout))
    return final(ctx, run.id)


class Held:
    """Runs claimed the way the worker's RQ loop claims them, each executing in a thread of its own."""

    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self.results: dict[str, str] = {}
        self.threads: list[threading.Thread] = []

    def take(self, run: Run) -> None:
        execution = RunExecution(self.ctx, run.id, final(self.ctx, run.id).dispatches)
        assert execution.claim() is None
        thread = threading.Thread(target=lambda: self.results.__setitem__(run.id, execution.run()))
        thread.start()
        self.threads.append(thread)

    def join(self, timeout: float = 20) -> dict[str, str]:
        for thread in self.threads:
            thread.join(timeout)
        return self.results


def queue_of(fake: FakeComfy, ctx: WorkerContext, wanted: dict[str, Any], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        queue = ctx.client.queue()
        if len(queue.running) == wanted["running"] and len(queue.pending) == wanted["pending"]:
            return
        time.sleep(0.01)
    raise AssertionError(f"ComfyUI's queue never held {wanted}: {ctx.client.queue()}")


def stamps(ctx: WorkerContext, run: Run) -> dict[str, int]:
    entry = ctx.client.history(run.prompt_id)
    assert entry is not None
    return {name: data["timestamp"] for name, data in entry["status"]["messages"]}


def test_the_next_run_is_posted_while_one_executes(ctx: WorkerContext, fake_comfyui: FakeComfy) -> None:
    fake_comfyui.control(exec_seconds=0.4)
    first, second = (submit(ctx, "invert", {"params": {"width": 8, "height": 8, "color": c}}) for c in (1, 2))
    held = Held(ctx)
    held.take(first)
    held.take(second)
    queue_of(fake_comfyui, ctx, {"running": 1, "pending": 1})  # ComfyUI's own queue is never empty meanwhile
    assert held.join() == {first.id: "succeeded", second.id: "succeeded"}
    a, b = sorted((stamps(ctx, first), stamps(ctx, second)), key=lambda s: s["execution_start"])
    assert 0 <= b["execution_start"] - a["execution_success"] <= 20  # the GPU waited on nobody
    for run in (first, second):
        done = final(ctx, run.id)
        assert done.attempts == 1 and len(done.outputs) == 1
        assert done.gpu_seconds == pytest.approx(0.4, abs=0.05)  # ComfyUI's execution, not the time in its queue
    assert len(ctx.pipeline) == 0


def test_a_time_limit_counts_from_the_runs_own_start(ctx: WorkerContext, fake_comfyui: FakeComfy) -> None:
    slow = sleeping(ctx, 1.0)
    quick = submit(ctx, "invert", {"params": {"width": 8, "height": 8}})
    ctx.conns.text.hset(keys.run(quick.id), "timeout", "0.5")  # shorter than its wait behind the slow one
    too_slow = sleeping(ctx, 1.0, timeout=0.5)
    held = Held(ctx)
    for run in (slow, quick, too_slow):
        held.take(run)
    results = held.join()
    assert results == {slow.id: "succeeded", quick.id: "succeeded", too_slow.id: "failed"}
    error = final(ctx, too_slow.id).error
    assert error is not None and error["type"] == "RunTimeout"
    started = stamps(ctx, too_slow)["execution_start"]
    ended = stamps(ctx, too_slow)["execution_interrupted"]
    assert 400 <= ended - started <= 900  # interrupted about 0.5 s after it started, not after it was posted


def test_cancel_of_a_run_waiting_in_comfyuis_queue_removes_it_there(
    ctx: WorkerContext, fake_comfyui: FakeComfy
) -> None:
    slow = sleeping(ctx, 1.0)
    waiting = submit(ctx, "invert", {"params": {"width": 8, "height": 8}})
    watcher = CancelWatcher(ctx)
    watcher.start()
    try:
        held = Held(ctx)
        held.take(slow)
        queue_of(fake_comfyui, ctx, {"running": 1, "pending": 0})  # in this order: the slow one runs first
        held.take(waiting)
        queue_of(fake_comfyui, ctx, {"running": 1, "pending": 1})
        time.sleep(0.2)  # the watcher's subscription settles
        assert Canceller(ctx.conns.text, run_ttl_seconds=60).cancel(final(ctx, waiting.id)) == "canceling"
        results = held.join()
    finally:
        watcher.stopped.set()
        watcher.join(5)
    assert results == {slow.id: "succeeded", waiting.id: "canceled"}
    assert final(ctx, waiting.id).status is RunStatus.CANCELED and final(ctx, waiting.id).gpu_seconds == 0.0
    stats = fake_comfyui.stats()
    assert waiting.prompt_id not in stats["prompts"] and stats["interrupted"] == 0  # it never executed
    assert slow.prompt_id in stats["prompts"]


def test_a_stopping_worker_hands_back_the_runs_waiting_in_comfyuis_queue(
    ctx: WorkerContext, fake_comfyui: FakeComfy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a worker does on SIGTERM: the run executing is finished, the ones posted behind it are taken out of
    ComfyUI's queue and go back to their backlog (no attempt used), so a stop takes one run's time at most."""
    # The waiting run must see its release before the slow one ends and it starts: a follower looks every
    # STOP_CHECK_SECONDS (1 s, as long as the slow run) when no frame wakes it, so it looks more often here.
    monkeypatch.setattr(follow, "STOP_CHECK_SECONDS", 0.1)
    slow = sleeping(ctx, 1.0)
    waiting = submit(ctx, "invert", {"params": {"width": 8, "height": 8}})
    held = Held(ctx)
    held.take(slow)
    queue_of(fake_comfyui, ctx, {"running": 1, "pending": 0})
    held.take(waiting)
    queue_of(fake_comfyui, ctx, {"running": 1, "pending": 1})
    for run in ctx.pipeline.runs():
        run.release.set()
    assert held.join() == {slow.id: "succeeded", waiting.id: "released"}
    back = final(ctx, waiting.id)
    assert back.status is RunStatus.QUEUED and back.attempts == 0 and back.worker == ""
    assert ctx.runs.queue_position(back) == 0
    assert waiting.prompt_id not in fake_comfyui.stats()["prompts"]
    assert ctx.conns.text.zscore(keys.INFLIGHT, waiting.id) is None
    events = [fields["type"] for _, fields in ctx.conns.text.xrange(keys.run_events(waiting.id))]
    assert events == ["queued", "started", "queued"]
