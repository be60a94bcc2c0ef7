"""``comfy-dispatch worker``: one RQ worker on exactly one queue, bound to one ComfyUI.

One queue only: with several, RQ pops with plain BLPOP and a SIGKILL between
pop and registry write loses the job (RQ-NOTES). With one, RQ uses BLMOVE
into its intermediate list. ``SimpleWorker`` runs jobs in this process, so
keep-alive connections, the heartbeat and (later) metrics live across jobs;
the run's own lease keeper stands in for RQ's per-job heartbeat.
"""

from __future__ import annotations

import logging
import socket
from urllib.parse import urlsplit

from rq import SimpleWorker

from dispatcher.settings import Settings
from worker import context, heartbeat
from worker.context import WorkerContext

log = logging.getLogger(__name__)


def default_name(comfyui_url: str) -> str:
    parts = urlsplit(comfyui_url)
    return f"{socket.gethostname()}-{parts.hostname}-{parts.port or 80}"


def run_worker(settings: Settings, name: str | None = None, *, burst: bool = False) -> None:
    """Serve runs until SIGINT/SIGTERM (the current run finishes first)."""
    worker_name = name or default_name(settings.comfyui_url)
    ctx = WorkerContext.build(settings, worker_name)
    context.install(ctx)
    heartbeat.beat(ctx)
    beats = heartbeat.Heartbeat(ctx)
    beats.start()
    log.info("worker %s: ComfyUI %s, queue %s", worker_name, settings.comfyui_url, settings.queue_name)
    rq_worker = SimpleWorker([ctx.queue], connection=ctx.conns.raw, name=worker_name)
    try:
        rq_worker.work(with_scheduler=True, burst=burst, logging_level=settings.log_level)
    finally:
        beats.stopped.set()
        heartbeat.forget(ctx)
        ctx.close()
