"""``comfy-dispatch scheduler``: moves runs from tenants' backlogs onto the one shallow RQ queue.

Woken by events on ``keys.SCHEDULER_WAKE`` (a submission left behind, a run
ending while others wait, a worker coming, going or running out of work)
rather than a timer; it also wakes when a backoff or a dispatch bucket it is
waiting on runs out, and once a second to reap. With nothing left to hand out,
it moves a run waiting behind another on one GPU to a worker that idles
(``dispatcher.scheduling.rebalance``). The RQ queue holds only as many runs as ready
workers have free pipeline slots (each holds up to its ``pipeline_depth``
runs), so the order is decided here, at the last moment: a run waits behind
at most the runs already posted to its ComfyUI. Each worker keeps its one-queue ``BLMOVE`` safety (RQ-NOTES).
Any number of schedulers may run: taking runs is one atomic script.
"""

from __future__ import annotations

import logging
import threading
import time

from redis.exceptions import RedisError

from dispatcher import keys
from dispatcher.connections import Connections
from dispatcher.lease import Leases
from dispatcher.scheduling.handout import Handout
from dispatcher.scheduling.rebalance import Rebalancer
from dispatcher.scheduling.recovery import Reaper
from dispatcher.settings import Settings

log = logging.getLogger(__name__)

REAP_INTERVAL = 1.0


class Scheduler:
    def __init__(self, settings: Settings, conns: Connections) -> None:
        self.settings = settings
        self.conns = conns
        self.handout = Handout(settings, conns)
        leases = Leases(conns.text, ttl_seconds=settings.lease_seconds, run_ttl_seconds=settings.run_ttl_seconds)
        self.reaper = Reaper(
            conns.text,
            leases,
            dispatch_timeout=settings.dispatch_timeout,
            retry_base=settings.retry_base,
            retry_cap=settings.retry_cap,
        )
        self.rebalancer = Rebalancer(conns.text)
        self.stopping = threading.Event()

    def dispatch(self, *, fresh: bool = False) -> float | None:
        """Hand what may go now to RQ; returns seconds until something blocked may move by itself.

        With nothing left to hand out, a run waiting behind another on one GPU while a worker idles is asked
        back, to go to that worker (``dispatcher.scheduling.rebalance``)."""
        taken = self.handout.dispatch(fresh=fresh)
        if not taken.runs and not taken.waiting:
            self.rebalancer.rebalance(self.handout.workers())
        return taken.wait

    def run(self) -> None:
        """Serve until ``stopping`` is set (SIGINT/SIGTERM in the CLI)."""
        log.info("scheduler: queue %s, reaping every %.0fs", self.settings.queue_name, REAP_INTERVAL)
        pubsub = self.conns.text.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        last_reap = 0.0
        fleet_changed = True
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
                    wait = self.dispatch(fresh=fleet_changed)
                    timeout = REAP_INTERVAL - (time.monotonic() - last_reap)
                    if wait is not None:
                        timeout = min(timeout, wait)
                    # Block until the next event; then drain the burst so one pass serves them all.
                    fleet_changed = False
                    message = pubsub.get_message(timeout=max(timeout, 0.0))
                    while message is not None:
                        fleet_changed = fleet_changed or message.get("data") in ("worker", "idle")
                        message = pubsub.get_message(timeout=0)
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
