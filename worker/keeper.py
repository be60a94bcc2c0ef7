"""Keeps the leases of every run a worker holds alive, from one background thread, in one round trip."""

from __future__ import annotations

import logging
import threading

from dispatcher.lease import Leases
from worker.pipeline import Pipeline

log = logging.getLogger(__name__)


class LeaseKeeper(threading.Thread):
    """Renews every held run's lease each third of its TTL; marks a held run ``lost`` when a renewal is refused.

    A run's thread checks ``lost`` between websocket frames and stops (deleting or interrupting its prompt on
    ComfyUI) when another attempt has taken the run over.
    """

    def __init__(self, leases: Leases, pipeline: Pipeline, ttl_seconds: float) -> None:
        super().__init__(name="lease-keeper", daemon=True)
        self.leases = leases
        self.pipeline = pipeline
        self.interval = ttl_seconds / 3
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            self.renew()

    def renew(self) -> None:
        held = [h for h in self.pipeline.runs() if not h.lost.is_set()]
        if not held:
            return
        try:
            renewed = self.leases.renew_all([h.lease for h in held])
        except Exception:  # a Redis blip must not kill the keeper; the next tick tries again
            log.warning("could not renew the leases of %d run(s)", len(held), exc_info=True)
            return
        for run, ok in zip(held, renewed, strict=True):
            if not ok and self.pipeline.get(run.run_id) is run:
                log.warning("lost the lease of run %s (attempt %s)", run.run_id, run.lease.attempt)
                run.lost.set()
