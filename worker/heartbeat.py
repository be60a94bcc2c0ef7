"""The worker's own heartbeat: its ComfyUI's health, its state, its pipeline slots and the runs it holds,
for the scheduler (which counts the slots of ready workers) and ``/v1/workers``."""

from __future__ import annotations

import logging
import threading
import time

from dispatcher import keys
from dispatcher.fleet import WorkerMode
from worker.context import WorkerContext

log = logging.getLogger(__name__)


def beat(ctx: WorkerContext) -> None:
    """Check ComfyUI once and publish this worker's state (expires unless renewed)."""
    healthy = ctx.client.healthy()
    with ctx.state.lock:
        came_back = healthy and not ctx.state.healthy.is_set()
        if healthy != ctx.state.comfyui_healthy:
            log.warning("ComfyUI at %s is %s", ctx.client.base_url, "healthy again" if healthy else "NOT answering")
        ctx.state.comfyui_healthy = healthy
    if healthy:
        ctx.state.healthy.set()
    else:
        ctx.state.healthy.clear()
    held = ctx.pipeline.runs()
    current = ctx.pipeline.current()
    if ctx.state.draining:
        state = WorkerMode.DRAINING
    elif not healthy:
        state = WorkerMode.PAUSED
    else:
        state = WorkerMode.BUSY if held else WorkerMode.IDLE
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
        },
    )
    pipe.expire(keys.worker(ctx.name), ttl)
    pipe.zadd(keys.WORKERS, {ctx.name: now})
    if came_back:
        pipe.publish(keys.SCHEDULER_WAKE, "worker")  # one more ready worker: the scheduler may dispatch
    pipe.execute()


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
