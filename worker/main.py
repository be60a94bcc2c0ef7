"""``comfy-dispatch worker``: one RQ worker on exactly one queue, bound to one ComfyUI.

One queue only: with several, RQ pops with plain BLPOP and a SIGKILL between
pop and registry write loses the job (RQ-NOTES). With one, RQ uses BLMOVE
into its intermediate list. ``SimpleWorker`` runs jobs in this process, so
keep-alive connections, the heartbeat and the metrics live across jobs;
the run's own lease keeper stands in for RQ's per-job heartbeat.
"""

from __future__ import annotations

import logging
import socket
from typing import Any
from urllib.parse import urlsplit

from rq import SimpleWorker

from dispatcher import metrics
from dispatcher.settings import Settings
from worker import context, heartbeat
from worker.cancel_watch import CancelWatcher
from worker.context import WorkerContext

log = logging.getLogger(__name__)

PAUSED_RECHECK_SECONDS = 5.0


class DispatchWorker(SimpleWorker):  # type: ignore[misc]
    """RQ's SimpleWorker that takes no job while its ComfyUI does not answer."""

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> Any:
        ctx = context.current()
        if not ctx.state.healthy.is_set():
            log.warning("paused: ComfyUI %s does not answer; taking no run until it does", ctx.client.base_url)
            # Woken by the heartbeat the moment ComfyUI answers; RQ's own heartbeat keeps us listed meanwhile.
            while not ctx.state.healthy.wait(PAUSED_RECHECK_SECONDS):
                self.heartbeat()
                if self._stop_requested:
                    return None
            log.info("resumed: ComfyUI %s answers again", ctx.client.base_url)
        return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)


def default_name(comfyui_url: str) -> str:
    parts = urlsplit(comfyui_url)
    return f"{socket.gethostname()}-{parts.hostname}-{parts.port or 80}"


def run_worker(settings: Settings, name: str | None = None, *, burst: bool = False) -> None:
    """Serve runs until SIGINT/SIGTERM (the current run finishes first)."""
    worker_name = name or default_name(settings.comfyui_url)
    ctx = WorkerContext.build(settings, worker_name)
    context.install(ctx)
    metrics.expose_worker_state(lambda: ctx.state.comfyui_healthy, lambda: bool(ctx.state.current_run))
    heartbeat.beat(ctx)
    threads: list[heartbeat.Heartbeat | CancelWatcher] = [heartbeat.Heartbeat(ctx), CancelWatcher(ctx)]
    for thread in threads:
        thread.start()
    log.info("worker %s: ComfyUI %s, queue %s", worker_name, settings.comfyui_url, settings.queue_name)
    rq_worker = DispatchWorker([ctx.queue], connection=ctx.conns.raw, name=worker_name)
    try:
        rq_worker.work(burst=burst, logging_level=settings.log_level)
    finally:
        for thread in threads:
            thread.stopped.set()
        heartbeat.forget(ctx)
        ctx.close()
