"""The worker's own heartbeat: its ComfyUI's health, its state, its pipeline slots, the runs it holds, the
digest of its ComfyUI's capability set and the checkpoint it ran last, for the scheduler (which counts the slots
of ready workers and routes runs by what each ComfyUI has) and ``/v1/workers``."""

from __future__ import annotations

import logging
import threading
import time

from dispatcher import keys
from dispatcher.fleet import WorkerMode
from dispatcher.routing.store import capabilities_ttl, capability_keys, definitions_key
from worker import capabilities
from worker.context import WorkerContext

log = logging.getLogger(__name__)


def beat(ctx: WorkerContext) -> None:
    """Check ComfyUI once and publish this worker's state (expires unless renewed); read what ComfyUI can run
    again when that is due (:mod:`worker.capabilities`)."""
    healthy = ctx.client.healthy()
    with ctx.state.lock:
        came_back = healthy and not ctx.state.healthy.is_set()
        if healthy != ctx.state.comfyui_healthy:
            log.warning("ComfyUI at %s is %s", ctx.client.base_url, "healthy again" if healthy else "NOT answering")
        ctx.state.comfyui_healthy = healthy
    if not healthy:
        capabilities.invalidate(ctx)  # it may come back with other custom nodes or model files
        ctx.state.healthy.clear()
    _write_state(ctx, healthy)
    if not healthy:
        return
    if capabilities.due(ctx.state, ctx.settings.capabilities_refresh_seconds, time.monotonic()):
        # After the state is renewed: /object_info of a ComfyUI with many custom nodes takes seconds to read.
        before = ctx.state.caps
        capabilities.refresh(ctx)
        if ctx.state.caps != before:
            _write_state(ctx, healthy)  # the new set at once, not a beat later
    ctx.state.healthy.set()
    if came_back:
        ctx.conns.text.publish(keys.SCHEDULER_WAKE, "worker")  # one more ready worker: the scheduler may dispatch


def _write_state(ctx: WorkerContext, healthy: bool) -> None:
    held = ctx.pipeline.runs()
    current = ctx.pipeline.current()
    if ctx.state.draining:
        state = WorkerMode.DRAINING
    elif not healthy:
        state = WorkerMode.PAUSED
    elif not ctx.state.warm.is_set():
        state = WorkerMode.WARMING
    else:
        state = WorkerMode.BUSY if held else WorkerMode.IDLE
    caps = ctx.state.caps
    now = time.time()
    ttl = max(int(ctx.settings.worker_heartbeat * 3), 5)
    pipe = ctx.conns.text.pipeline(transaction=False)
    pipe.hset(
        keys.worker(ctx.name),
        mapping={
            "name": ctx.name,
            "comfyui_url": ctx.client.base_url,
            "comfyui_healthy": "1" if healthy else "0",
            "state": state,
            "current_run": current.run_id if current else "",
            "runs": ",".join(h.run_id for h in held),
            "slots": str(ctx.pipeline.depth),
            "last_seen": repr(now),
            "queue": ctx.settings.queue_name,
            "caps": caps,
            "checkpoint": ctx.state.checkpoint,
            "warmup_error": ctx.state.warmup_error,
        },
    )
    pipe.expire(keys.worker(ctx.name), ttl)
    # The node definitions go with the set: one gone alone is published again too (the API converts UI-format
    # workflows with them).
    caps_keys = (*capability_keys(caps), definitions_key(caps)) if caps else ()
    for key in caps_keys:  # a set lives while a worker that has it beats
        pipe.expire(key, capabilities_ttl(ctx.settings))
    pipe.zadd(keys.WORKERS, {ctx.name: now})
    replies = pipe.execute()
    if not all(replies[2 : 2 + len(caps_keys)]):  # the set is gone (Redis restarted empty, say): publish it again
        capabilities.invalidate(ctx)


def drain(ctx: WorkerContext) -> None:
    """Stop being counted for new runs at once (the runs held are finished first)."""
    ctx.state.draining = True
    beat(ctx)
    ctx.conns.text.publish(keys.SCHEDULER_WAKE, "worker")  # fewer slots: the scheduler reads the fleet again


def forget(ctx: WorkerContext) -> None:
    """Remove this worker from the registry (clean shutdown)."""
    pipe = ctx.conns.text.pipeline(transaction=False)
    pipe.delete(keys.worker(ctx.name))
    pipe.zrem(keys.WORKERS, ctx.name)
    pipe.publish(keys.SCHEDULER_WAKE, "worker")
    pipe.execute()


class Heartbeat(threading.Thread):
    def __init__(self, ctx: WorkerContext) -> None:
        super().__init__(name="heartbeat", daemon=True)
        self.ctx = ctx
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                beat(self.ctx)
            except Exception:  # Redis down for a moment: keep beating, the worker itself goes on
                log.warning("heartbeat failed", exc_info=True)
            self.stopped.wait(self.ctx.settings.worker_heartbeat)
