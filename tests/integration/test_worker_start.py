"""A worker's start and stop: starting again under its name, it takes out of ComfyUI's queue what its earlier
life posted and left; told to stop during a claim, it finishes the claim. And what it does with a job it popped
once the job's function returned."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue
from rq.exceptions import StopRequested

from tests.integration.conftest import ContextFactory
from tests.support import FakeComfy
from worker import jobs
from worker.main import DispatchWorker, _clear_orphans

INVERT = json.loads((Path(__file__).resolve().parents[2] / "workflows" / "invert" / "workflow.json").read_text())


def test_only_its_own_prompts_that_wait_are_taken_out(worker_context: ContextFactory, fake_comfyui: FakeComfy) -> None:
    ctx = worker_context()
    fake_comfyui.control(hang=True)  # the first prompt runs until interrupted: the others wait behind it
    ours_running, ours_waiting, theirs = (str(uuid.uuid4()) for _ in range(3))
    ctx.client.post_prompt(INVERT, prompt_id=ours_running, client_id=ctx.hub.client_id)
    ctx.client.post_prompt(INVERT, prompt_id=ours_waiting, client_id=ctx.hub.client_id)
    ctx.client.post_prompt(INVERT, prompt_id=theirs, client_id="someone-else")
    assert ctx.client.queue().running == (ours_running,)

    _clear_orphans(ctx)

    queue = ctx.client.queue()
    assert queue.running == (ours_running,) and queue.pending == (theirs,)  # a running one is taken over later


def test_a_stop_signal_during_a_claim_lets_the_claim_finish(redis_url: str) -> None:
    """RQ raises StopRequested from its signal handler unless the worker is busy; ours never is (no per-job
    bookkeeping), so during a job the stop is only noted and the loop ends after it."""
    connection = Redis.from_url(redis_url)
    worker = DispatchWorker([Queue("q", connection=connection)], connection=connection, name="w")
    worker._in_job = True
    worker._shutdown()
    assert worker._stop_requested
    worker._in_job, worker._stop_requested = False, False
    with pytest.raises(StopRequested):
        worker._shutdown()


@pytest.mark.parametrize("outcome", ["forgotten", "kept", "raised"])
def test_a_popped_job_leaves_rqs_lists_once(redis_url: str, monkeypatch: pytest.MonkeyPatch, outcome: str) -> None:
    """A run's claim takes its job off RQ's lists in its own step: the worker's loop then spends no round trip on
    it. Otherwise (ComfyUI down, a job that is not a run's, a claim that failed) the loop does it."""
    connection = Redis.from_url(redis_url)
    queue = Queue("q", connection=connection)
    worker = DispatchWorker([queue], connection=connection, name="w")
    job = queue.enqueue("builtins.print", job_id="j")
    connection.lmove(queue.key, queue.intermediate_queue_key)  # as RQ's pop does

    def call(popped: object, intermediate_key: str) -> bool:
        assert intermediate_key == queue.intermediate_queue_key
        if outcome == "raised":
            raise RuntimeError("a bug in a claim")
        return outcome == "forgotten"

    pipelines: list[object] = []
    pipeline = connection.pipeline
    monkeypatch.setattr(jobs, "call", call)
    monkeypatch.setattr(connection, "pipeline", lambda *a, **k: pipelines.append(a) or pipeline(*a, **k))
    worker.execute_job(job, queue)
    assert len(pipelines) == (0 if outcome == "forgotten" else 1)
    if outcome != "forgotten":
        assert connection.llen(queue.intermediate_queue_key) == 0 and not connection.exists(job.key)
