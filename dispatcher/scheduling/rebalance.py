"""Rebalancing pipelines: a run that waits behind another on one GPU while another GPU idles is moved there.

A worker holds the run its ComfyUI executes and the next ones, posted behind it (``worker.pipeline``). When
nothing waits in the backlogs and a ready worker holds nothing while another holds a run that has not
started, that run is better off on the idle GPU: the scheduler asks its worker to hand it back
(``keys.RELEASE``). The worker does what a stopping worker does: deletes the prompt from its ComfyUI's queue
unless it started (then nothing changes), and puts the run back at its place in the backlog, no attempt
used; the idle worker, blocked the longest on RQ's queue, takes it. Without this, a run posted behind a long
one waits out the long one while a GPU next to it has nothing to do.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from redis import Redis

from dispatcher import keys
from dispatcher.fleet import WorkerInfo

log = logging.getLogger(__name__)

# A run asked back is not asked again this soon (its worker may not have seen it yet, or it started).
ASK_AGAIN_SECONDS = 1.0


@dataclass(frozen=True)
class InFlight:
    """A run handed out: claimed by ``worker`` at ``claimed_at``, or not claimed yet (``worker`` empty)."""

    run_id: str
    worker: str
    claimed_at: float


def pick(ready: list[str], inflight: list[InFlight], asked: dict[str, float], now: float) -> list[str]:
    """Runs to ask back (pure): of each worker holding more than one run, all but the first it claimed (the one
    its ComfyUI most likely executes), the latest claimed first; at most one per ready worker holding
    nothing, less the runs handed out that nobody has claimed yet (those idle workers will take them)."""
    held: dict[str, list[InFlight]] = {}
    unclaimed = 0
    for run in inflight:
        if run.worker:
            held.setdefault(run.worker, []).append(run)
        else:
            unclaimed += 1
    idle = sum(1 for name in ready if name not in held) - unclaimed
    if idle <= 0:
        return []
    waiting = [r for runs in held.values() for r in sorted(runs, key=lambda r: r.claimed_at)[1:]]
    waiting.sort(key=lambda r: r.claimed_at, reverse=True)
    fresh = [r.run_id for r in waiting if now - asked.get(r.run_id, float("-inf")) >= ASK_AGAIN_SECONDS]
    return fresh[:idle]


class Rebalancer:
    """The scheduler's side: read the runs in flight, ask back the ones to move (a pub/sub message each)."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.asked: dict[str, float] = {}

    def rebalance(self, workers: list[WorkerInfo]) -> list[str]:
        """Ask back the runs worth moving to ``workers`` that are ready and hold nothing; the ones asked."""
        ready = [w.name for w in workers if w.ready]
        if not ready:
            return []
        run_ids: list[str] = self.redis.zrange(keys.INFLIGHT, 0, -1)  # type: ignore[assignment]
        pipe = self.redis.pipeline(transaction=False)
        for run_id in run_ids:
            pipe.hmget(keys.run(run_id), "status", "worker", "started_at")
        inflight = [
            InFlight(run_id, worker or "", float(started or 0.0)) if status == "running" else InFlight(run_id, "", 0)
            for run_id, (status, worker, started) in zip(run_ids, pipe.execute(), strict=True)
        ]
        now = time.monotonic()
        self.asked = {r: at for r, at in self.asked.items() if now - at < ASK_AGAIN_SECONDS}
        moved = pick(ready, inflight, self.asked, now)
        if moved:
            pipe = self.redis.pipeline(transaction=False)
            for run_id in moved:
                pipe.publish(keys.RELEASE, run_id)
                self.asked[run_id] = now
            pipe.execute()
            log.info("asked back %d run(s) waiting behind others while a worker idles", len(moved))
        return moved
