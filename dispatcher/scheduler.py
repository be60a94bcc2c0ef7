"""``comfy-dispatch scheduler``: moves runs from tenants' backlogs onto the one shallow RQ queue.

Woken by events on ``keys.SCHEDULER_WAKE`` (a submission, a run ending, a
worker coming back) rather than a timer; it also wakes when a backoff or a
dispatch bucket it is waiting on runs out, and once a second to reap. The
RQ queue holds only as many runs as there are idle ready workers, so the
order is decided here, at the last moment, and each worker keeps its one-queue
``BLMOVE`` safety (RQ-NOTES). Any number of schedulers may run: taking runs
is one atomic script.
"""

from __future__ import annotations

import logging
import threading
import time

from redis.exceptions import RedisError
from rq import Queue

from dispatcher import keys, metrics
from dispatcher.connections import Connections
from dispatcher.dispatch import Dispatcher
from dispatcher.fleet import read_workers
from dispatcher.lease import Leases
from dispatcher.recovery import Reaper
from dispatcher.settings import Settings

log = logging.getLogger(__name__)

JOB_FUNC = "worker.runner.execute_run"
REAP_INTERVAL = 1.0


class Scheduler:
    def __init__(self, settings: Settings, conns: Connections) -> None:
        self.settings = settings
        self.conns = conns
        self.queue = Queue(settings.queue_name, connection=conns.raw)
        self.dispatcher = Dispatcher(conns.text, dispatch_rate=settings.dispatch_rate, max_running=settings.max_running)
        leases = Leases(conns.text, ttl_seconds=settings.lease_seconds, run_ttl_seconds=settings.run_ttl_seconds)
        self.reaper = Reaper(
            conns.text,
            leases,
            dispatch_timeout=settings.dispatch_timeout,
            retry_base=settings.retry_base,
            retry_cap=settings.retry_cap,
        )
        self.stopping = threading.Event()

    def ready_workers(self) -> int:
        since = time.time() - 3 * self.settings.worker_heartbeat
        return sum(1 for w in read_workers(self.conns.text, since=since) if w.ready)

    def dispatch(self) -> float | None:
        """Hand what may go now to RQ; returns seconds until something blocked may move by itself."""
        taken = self.dispatcher.take(self.ready_workers())
        if taken.runs:
            self._enqueue(taken.runs)
        return taken.wait

    def _enqueue(self, runs: list[tuple[str, int]]) -> None:
        pipe = self.conns.text.pipeline(transaction=False)
        for run_id, _ in runs:
            pipe.hmget(keys.run(run_id), "timeout", "priority")
        fields: list[list[str | None]] = pipe.execute()
        jobs = [
            self.queue.prepare_data(
                JOB_FUNC,
                args=(run_id, dispatch),
                job_id=f"{run_id}-d{dispatch}",  # RQ ids: letters, digits, _ and - only
                timeout=int(float(timeout or self.settings.run_timeout)) + 120,  # ours fires first
                result_ttl=0,  # the run record is the truth; RQ's copy of the outcome is not needed
                failure_ttl=3600,
                description=f"run {run_id} dispatch {dispatch}",
            )
            for (run_id, dispatch), (timeout, _) in zip(runs, fields, strict=True)
        ]
        # If we die between take and this, the reaper dispatches the runs again after dispatch_timeout.
        with self.conns.raw.pipeline(transaction=True) as rq_pipe:
            self.queue.enqueue_many(jobs, pipeline=rq_pipe)
            rq_pipe.execute()
        for _, priority in fields:
            metrics.RUNS_DISPATCHED.labels(priority or "normal").inc()
        log.debug("dispatched %d run(s)", len(runs))

    def run(self) -> None:
        """Serve until ``stopping`` is set (SIGINT/SIGTERM in the CLI)."""
        log.info("scheduler: queue %s, reaping every %.0fs", self.settings.queue_name, REAP_INTERVAL)
        pubsub = self.conns.text.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        last_reap = 0.0
        try:
            pubsub.subscribe(keys.SCHEDULER_WAKE)
            while not self.stopping.is_set():
                try:
                    now = time.monotonic()
                    if now - last_reap >= REAP_INTERVAL:
                        report = self.reaper.reap()
                        last_reap = now
                        if report.retried or report.dead or report.redispatched:
                            log.info("reaper: %s", report)
                    wait = self.dispatch()
                    timeout = REAP_INTERVAL - (time.monotonic() - last_reap)
                    if wait is not None:
                        timeout = min(timeout, wait)
                    # Block until the next event; then drain the burst so one pass serves them all.
                    if pubsub.get_message(timeout=max(timeout, 0.0)) is not None:
                        while pubsub.get_message(timeout=0) is not None:
                            pass
                except RedisError as exc:  # Redis restarting: keep the process, try again shortly
                    log.warning("scheduler: Redis error (%s); retrying in 1s", exc)
                    self.stopping.wait(1.0)
                    pubsub = self._resubscribe(pubsub)
        finally:
            pubsub.close()

    def _resubscribe(self, pubsub: object) -> object:
        try:
            pubsub.close()  # type: ignore[attr-defined]
        except RedisError:
            pass
        fresh = self.conns.text.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        try:
            fresh.subscribe(keys.SCHEDULER_WAKE)
        except RedisError:
            pass  # the next loop will fail again and come back here
        return fresh
