"""Warming up: a workflow a worker runs on its ComfyUI before it takes runs (``COMFY_DISPATCH_WARMUP_WORKFLOW``).

On a GPU the first prompt that needs a model pays for loading it: seconds to tens of seconds. A worker given a
warm-up workflow (with ``COMFY_DISPATCH_WARMUP_PARAMS``, a JSON object of its parameters) runs it on its ComfyUI
first, and only then counts as ready: meanwhile its heartbeat says ``warming`` and the scheduler gives it no run.
A warm-up that fails (ComfyUI refuses the graph, a node raises) keeps the worker out, with the reason in its
heartbeat (``/v1/workers``), and is tried again every :data:`RETRY_SECONDS`; one that cannot reach ComfyUI
waits for it. The prompt's end is read from its events on the worker's websocket, not polled.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from typing import Any

from redis.exceptions import RedisError

from dispatcher.binding import bind
from dispatcher.errors import (
    ComfyUIError,
    ComfyUIUnavailable,
    ComfyUIValidationError,
    DispatchError,
    WorkflowNotFound,
    WorkflowRetired,
)
from dispatcher.workflows import PublishedRegistry, Registry, Workflow
from dispatcher.workflows.store import WorkflowStore
from worker.context import WorkerContext

log = logging.getLogger(__name__)

RETRY_SECONDS = 30.0
WAIT_SECONDS = 600.0  # a warm-up that has not ended by then has failed


class WarmupFailed(Exception):
    """The warm-up workflow did not succeed; the message says why."""


def warmup_workflow(ctx: WorkerContext) -> Workflow:
    """The latest published version of the warm-up workflow (pushed over the API, or a bundled folder the API
    published), else this host's folder of it. Read only: a worker never publishes (its folders may be older)."""
    name = ctx.settings.warmup_workflow
    try:
        return PublishedRegistry(WorkflowStore(ctx.conns.text)).get(name)
    except (WorkflowNotFound, RedisError) as exc:
        if isinstance(exc, WorkflowRetired):
            raise
        return Registry.load(ctx.settings.workflows_dir).get(name)


def graph_of(ctx: WorkerContext) -> dict[str, Any]:
    """The warm-up workflow bound with its parameters (WarmupFailed naming what does not fit)."""
    settings = ctx.settings
    try:
        params = json.loads(settings.warmup_params or "{}")
        if not isinstance(params, dict):
            raise WarmupFailed("COMFY_DISPATCH_WARMUP_PARAMS must be a JSON object")
        workflow = warmup_workflow(ctx)
        return bind(workflow, {"params": params}, run_id=f"warmup-{ctx.name}").graph
    except ValueError as exc:
        raise WarmupFailed(f"COMFY_DISPATCH_WARMUP_PARAMS is not JSON: {exc}") from None
    except DispatchError as exc:
        raise WarmupFailed(f"warm-up workflow {settings.warmup_workflow!r}: {exc}") from None


def node_errors(exc: ComfyUIValidationError) -> str:
    """The node errors of a refused graph, as a message's tail: "; node 4 (CheckpointLoaderSimple): ckpt_name: ..."."""
    parts = []
    for node_id, found in exc.node_errors.items():
        if not isinstance(found, dict):
            continue
        details = [str(e.get("details") or e.get("message")) for e in found.get("errors", []) if isinstance(e, dict)]
        parts.append(f"node {node_id} ({found.get('class_type', '?')}): {'; '.join(details)}")
    return "".join(f"; {part}" for part in parts)


def warm_up(ctx: WorkerContext) -> float:
    """Run the warm-up workflow once and wait for its end; its seconds. WarmupFailed, ComfyUIUnavailable."""
    graph = graph_of(ctx)
    prompt_id = str(uuid.uuid4())
    started = time.monotonic()
    with ctx.hub.subscribe(prompt_id) as events:
        try:
            ctx.client.post_prompt(graph, prompt_id=prompt_id, client_id=ctx.hub.client_id)
        except ComfyUIUnavailable:
            raise
        except ComfyUIValidationError as exc:
            raise WarmupFailed(f"ComfyUI refused the warm-up workflow: {exc}{node_errors(exc)}") from None
        except ComfyUIError as exc:
            raise WarmupFailed(f"ComfyUI refused the warm-up workflow: {exc}") from None
        while (left := started + WAIT_SECONDS - time.monotonic()) > 0:
            frame = events.get(left)
            if frame is None:
                break
            kind, data = frame.get("type"), frame.get("data") or {}
            if not isinstance(data, dict) or data.get("prompt_id") != prompt_id:
                continue
            if kind == "execution_success":
                return time.monotonic() - started
            if kind == "execution_error":
                raise WarmupFailed(
                    f"node {data.get('node_id')} ({data.get('node_type')}) failed: "
                    f"{data.get('exception_type')}: {data.get('exception_message')}"
                )
            if kind == "execution_interrupted":
                raise WarmupFailed("the warm-up prompt was interrupted")
    raise WarmupFailed(f"the warm-up prompt did not end within {WAIT_SECONDS:.0f} s")


class Warmer(threading.Thread):
    """Warms the worker's ComfyUI up, trying again until it succeeds or the worker stops."""

    def __init__(self, ctx: WorkerContext) -> None:
        super().__init__(name="warmup", daemon=True)
        self.ctx = ctx
        self.stopped = threading.Event()

    def run(self) -> None:
        state = self.ctx.state
        while not self.stopped.is_set():
            if not state.healthy.wait(1.0):
                continue  # ComfyUI does not answer: the heartbeat says paused; warm up once it does
            try:
                seconds = warm_up(self.ctx)
            except ComfyUIUnavailable as exc:
                log.warning("warm-up: ComfyUI does not answer (%s); trying again when it does", exc)
                self.stopped.wait(1.0)
                continue
            except WarmupFailed as exc:
                state.warmup_error = str(exc)
                log.error("warm-up failed, taking no run: %s; trying again in %.0f s", exc, RETRY_SECONDS)
                self.stopped.wait(RETRY_SECONDS)
                continue
            state.warmup_error = ""
            state.warm.set()
            log.info("warmed up with %r in %.1f s: taking runs", self.ctx.settings.warmup_workflow, seconds)
            return
