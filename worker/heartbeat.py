"""The worker's own heartbeat: its ComfyUI's health, its state and its current run, for the
scheduler (which counts ready workers) and ``/v1/workers``."""

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
        current = ctx.state.current_run
    if healthy:
        ctx.state.healthy.set()
    else:
        ctx.state.healthy.clear()
    state = WorkerMode.BUSY if current else (WorkerMode.IDLE if healthy else WorkerMode.PAUSED)
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
            "current_run": current,
            "last_seen": repr(now),
            "queue": ctx.settings.queue_name,
        },
    )
    pipe.expire(keys.worker(ctx.name), ttl)
    pipe.zadd(keys.WORKERS, {ctx.name: now})
    if came_back:
        pipe.publish(keys.SCHEDULER_WAKE, "worker")  # one more ready worker: the scheduler may dispatch
    pipe.execute()


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
