"""``comfy-dispatch webhooks``: the relay thread and an RQ worker on the webhook queue only.

Deliveries run in their own process, on their own queue: a slow or dead
receiver holds this worker, never a GPU worker. ``SimpleWorker`` (no fork per
job): a delivery is one short HTTP request, and the sender built at start is
reused by every job. The worker runs RQ's scheduler (``with_scheduler``),
which moves retries onto the queue when they are due. Several webhooks
processes may run: the consumer group shares the events between their relays,
RQ the jobs between their workers, and one scheduler at a time holds the
queue's scheduler lock.
"""

from __future__ import annotations

import logging
import os
import socket
import threading

from rq import SimpleWorker

from dispatcher.connections import Connections
from dispatcher.settings import Settings
from dispatcher.storage import LocalStore
from dispatcher.webhooks import job
from dispatcher.webhooks.relay import Relay

log = logging.getLogger(__name__)


def run_webhooks(settings: Settings, *, name: str | None = None, burst: bool = False) -> None:
    """Relay events and deliver webhooks until SIGINT/SIGTERM (the delivery under way finishes first)."""
    worker_name = name or f"webhooks-{socket.gethostname()}-{os.getpid()}"
    conns = Connections.from_url(settings.redis_url)
    sender = job.Sender(settings, conns)
    job.install(sender)
    relay = Relay(
        conns.text,
        sender.enqueue,
        public_url=settings.public_url,
        store=LocalStore(settings.output_dir),
        consumer=worker_name,
    )
    relay.ensure_group()
    thread = threading.Thread(target=relay.run, name="webhook-relay", daemon=True)
    thread.start()
    if not settings.public_url:
        log.warning("COMFY_DISPATCH_PUBLIC_URL is not set: output URLs in callbacks are relative (/v1/runs/...)")
    log.info(
        "webhooks %s: queue %s, retries for %.0fs", worker_name, settings.webhook_queue, settings.webhook_retry_for
    )
    worker = SimpleWorker([sender.queue], connection=conns.raw, name=worker_name)
    try:
        worker.work(burst=burst, with_scheduler=True, logging_level=settings.log_level)
    finally:
        relay.stopping.set()
        thread.join(5)
        conns.close()
