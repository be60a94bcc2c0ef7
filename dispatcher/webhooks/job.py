"""The RQ job that makes one delivery attempt, and schedules the next one.

Retries use RQ's own scheduler: ``queue.enqueue_at`` puts the next attempt in the
queue's ScheduledJobRegistry and the webhooks worker, started ``with_scheduler``,
moves it onto the queue when due (to the second). We do not use RQ's
``Retry(max, interval)``: it has no jitter and needs the job to raise, and a list
of intervals fixes the delays in advance.

The next attempt is scheduled *before* this one sends, as a watchdog due after the
longest an attempt can take: if this process dies mid-request, the message is
still retried. Once the answer is in, the watchdog is moved to the planned time
(a failure), or removed (a success, or the time bound reached). A watchdog that
fires anyway finds the message delivered and does nothing
(:meth:`DeliveryLog.begin`). Every attempt is recorded in the run's delivery list.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from rq import Queue
from rq.job import Job

import dispatcher
from dispatcher import metrics
from dispatcher.addresses import AllowList
from dispatcher.connections import Connections
from dispatcher.settings import Settings
from dispatcher.tenants import TenantStore
from dispatcher.webhooks import signing
from dispatcher.webhooks.deliveries import Attempt, Delivery, DeliveryLog, Outcome
from dispatcher.webhooks.schedule import RetrySchedule
from dispatcher.webhooks.transport import HttpTransport, SendFailed, Transport

log = logging.getLogger(__name__)

JOB_FUNC = "dispatcher.webhooks.job.deliver"
USER_AGENT = f"comfy-dispatch-webhooks/{dispatcher.__version__}"


def enqueue_delivery(queue: Queue, delivery: Delivery, *, timeout: float, at: float | None = None) -> None:
    """Queue ``delivery``'s attempt now, or schedule it for Unix time ``at`` (rounded up to the second)."""
    options: dict[str, Any] = {
        "job_id": delivery.job_id,
        "job_timeout": int(2 * timeout) + 30,  # our request timeout fires first
        "result_ttl": 0,  # the delivery list is the record, not RQ's
        "failure_ttl": 86400,
        "description": f"webhook {delivery.webhook_id} attempt {delivery.attempt}",
    }
    if at is None:
        queue.enqueue(JOB_FUNC, delivery.to_dict(), **options)
    else:
        # RQ's scheduled registry counts whole seconds; rounding up never makes a retry early.
        queue.enqueue_at(datetime.fromtimestamp(math.ceil(at), tz=UTC), JOB_FUNC, delivery.to_dict(), **options)


class Sender:
    """Makes delivery attempts; one per webhooks process (RQ calls :func:`deliver`, which finds it)."""

    def __init__(
        self,
        settings: Settings,
        conns: Connections,
        *,
        transport: Transport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.conns = conns
        self.queue = Queue(settings.webhook_queue, connection=conns.raw)
        self.deliveries = DeliveryLog(conns.text, keep_seconds=settings.run_ttl_seconds)
        self.tenants = TenantStore(conns.text, settings)
        self.transport = transport or HttpTransport(AllowList.parse(settings.callback_allow))
        self.schedule = RetrySchedule(
            base=settings.webhook_retry_base, cap=settings.webhook_retry_cap, retry_for=settings.webhook_retry_for
        )
        self.clock = clock
        # The longest one attempt can take (requests' timeout bounds each connect and read, not the sum).
        self.grace = 2 * settings.webhook_timeout + 5

    def enqueue(self, delivery: Delivery, *, at: float | None = None) -> None:
        enqueue_delivery(self.queue, delivery, timeout=self.settings.webhook_timeout, at=at)

    def attempt(self, delivery: Delivery) -> Attempt | None:
        """Make ``delivery``'s attempt and record it; None if it was made already (a duplicate job)."""
        if not self.deliveries.begin(delivery, until=delivery.first_at + self.schedule.retry_for):
            log.debug("webhook %s attempt %d: already made or finished", delivery.webhook_id, delivery.attempt)
            return None
        started = self.clock()
        delay = self.schedule.delay(delivery.attempt)
        following = delivery.following()
        watchdog = self.schedule.next_at(first_at=delivery.first_at, now=started + self.grace, delay=delay)
        if watchdog is not None:
            self.enqueue(following, at=watchdog)
        status, error = self._send(delivery)
        next_at: float | None = None
        if status is not None and 200 <= status < 300:
            outcome = Outcome.DELIVERED
        else:
            next_at = self.schedule.next_at(first_at=delivery.first_at, now=self.clock(), delay=delay)
            outcome = Outcome.GAVE_UP if next_at is None else Outcome.RETRYING
        record = Attempt(
            webhook_id=delivery.webhook_id,
            event=delivery.event,
            url=delivery.url,
            attempt=delivery.attempt,
            at=started,
            status_code=status,
            error=error,
            outcome=outcome,
            next_at=next_at,
        )
        # Recorded first: a watchdog that slips through the changes below then finds the message ended.
        self.deliveries.record(delivery, record)
        if next_at is None and watchdog is not None:
            self._cancel(following)
        elif next_at is not None and watchdog is not None:
            self._move(following, next_at)
        elif next_at is not None:
            self.enqueue(following, at=next_at)
        self._log(delivery, record)
        # Counted here, in the long-lived webhooks process: its RQ worker is a SimpleWorker (no fork per job).
        metrics.WEBHOOK_DELIVERIES.labels(outcome.value).inc()
        return record

    def _send(self, delivery: Delivery) -> tuple[int | None, str | None]:
        body = delivery.body.encode()
        secret = self.tenants.webhook_secret(delivery.tenant)  # read at each attempt: a rotated secret applies
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            **signing.headers(secret, delivery.webhook_id, int(self.clock()), body),
        }
        try:
            status = self.transport.post(delivery.url, headers, body, timeout=self.settings.webhook_timeout)
        except SendFailed as exc:
            return None, str(exc)
        return status, None if 200 <= status < 300 else f"HTTP {status}"

    def _cancel(self, following: Delivery) -> None:
        # Removed from the schedule only if still there; if RQ already queued it, it finds the message ended.
        if self.queue.scheduled_job_registry.remove(following.job_id):
            self.conns.raw.delete(Job.key_for(following.job_id))

    def _move(self, following: Delivery, at: float) -> None:
        # XX: only while still scheduled; a watchdog RQ already queued just runs a little early.
        registry = self.queue.scheduled_job_registry
        self.conns.raw.zadd(registry.key, {following.job_id: math.ceil(at)}, xx=True)

    @staticmethod
    def _log(delivery: Delivery, record: Attempt) -> None:
        what = f"webhook {delivery.webhook_id} ({delivery.event}) to {delivery.url} attempt {delivery.attempt}"
        if record.outcome is Outcome.DELIVERED:
            log.info("%s: delivered (%s)", what, record.status_code)
        elif record.outcome is Outcome.RETRYING:
            log.warning("%s failed (%s); next at %s", what, record.error, _iso(record.next_at))
        else:
            log.error("%s failed (%s); gave up after %d attempt(s)", what, record.error, delivery.attempt)


def _iso(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp, tz=UTC).isoformat(timespec="seconds")


_current: Sender | None = None


def install(sender: Sender) -> None:
    """Make ``sender`` the one :func:`deliver` uses (``run_webhooks`` does this at start)."""
    global _current
    _current = sender


def deliver(data: dict[str, Any]) -> None:
    """The RQ job function: one attempt of the delivery ``data`` (:meth:`Delivery.to_dict`)."""
    if _current is None:
        raise RuntimeError("no webhook sender: run deliveries through `comfy-dispatch webhooks`")
    _current.attempt(Delivery.from_dict(data))
