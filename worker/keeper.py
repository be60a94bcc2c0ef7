"""Keeps a run's lease alive from a background thread while the run executes."""

from __future__ import annotations

import logging
import threading
from types import TracebackType

from dispatcher.lease import Lease, Leases

log = logging.getLogger(__name__)


class LeaseKeeper:
    """Renews ``lease`` every third of its TTL; sets ``lost`` if a renewal is refused.

    The executing thread checks ``lost`` between websocket frames and stops
    (interrupting its ComfyUI) when another attempt has taken the run over.
    """

    def __init__(self, leases: Leases, lease: Lease, ttl_seconds: float) -> None:
        self.leases = leases
        self.lease = lease
        self.interval = ttl_seconds / 3
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"lease-{lease.run_id}", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                renewed = self.leases.renew(self.lease)
            except Exception:  # a Redis blip must not kill the keeper; the next tick tries again
                log.warning("could not renew the lease of run %s", self.lease.run_id, exc_info=True)
                continue
            if not renewed:
                log.warning("lost the lease of run %s (attempt %s)", self.lease.run_id, self.lease.attempt)
                self.lost.set()
                return
