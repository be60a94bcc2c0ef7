"""The reaper: runs in flight whose worker died, and dispatches nobody picked up.

A worker's lease expires ``lease_seconds`` after its last renewal. A run
still ``running`` with no lease lost its worker (SIGKILL, crash, partition):
it is retried like any transient failure (or dead-lettered with no attempt
left). A run dispatched but never claimed after ``dispatch_timeout`` (its RQ
job was lost with a worker between pop and claim) goes back to the head of
its backlog without using an attempt. RQ would notice the first case only
minutes later, and the second never (RQ-NOTES).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from redis import Redis

from dispatcher import keys, metrics
from dispatcher.backoff import full_jitter
from dispatcher.lease import LUA_BACK_IN_LINE, Leases, RequeueResult, back_in_line_keys
from dispatcher.routing.lua import LUA_UNROUTE
from dispatcher.runs import Run, RunStore

log = logging.getLogger(__name__)

_REDISPATCH = (
    LUA_BACK_IN_LINE
    + """
-- KEYS: back_in_line's. ARGV: run_id, tenant, dispatch, wake
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
if redis.call('HGET', KEYS[1], 'status') ~= 'queued' then return 0 end
if redis.call('HGET', KEYS[1], 'dispatches') ~= ARGV[3] then return 0 end
if redis.call('ZSCORE', KEYS[3], ARGV[1]) == false then return 0 end
back_in_line(ARGV[1], ARGV[2])
redis.call('PUBLISH', ARGV[4], 'redispatch')
return 1
"""
)

_FORGET = (
    LUA_UNROUTE
    + """
-- a run that ended (or expired) but is still listed in flight. KEYS: run, INFLIGHT, tenant inflight
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'queued' or status == 'running' then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('SREM', KEYS[3], ARGV[1])
unroute(KEYS[1], ARGV[1])
return 1
"""
)


@dataclass(frozen=True)
class ReapReport:
    retried: int = 0
    dead: int = 0
    redispatched: int = 0


class Reaper:
    def __init__(
        self, redis: Redis, leases: Leases, *, dispatch_timeout: float, retry_base: float, retry_cap: float
    ) -> None:
        self.redis = redis
        self.leases = leases
        self.runs = RunStore(redis)
        self.dispatch_timeout = dispatch_timeout
        self.retry_base = retry_base
        self.retry_cap = retry_cap
        self._redispatch = redis.register_script(_REDISPATCH)
        self._forget = redis.register_script(_FORGET)

    def reap(self) -> ReapReport:
        """One look at every run in flight (as many as there are busy workers: cheap)."""
        inflight: list[tuple[str, float]] = self.redis.zrange(keys.INFLIGHT, 0, -1, withscores=True)  # type: ignore[assignment]
        if not inflight:
            return ReapReport()
        pipe = self.redis.pipeline(transaction=False)
        for run_id, _ in inflight:
            pipe.exists(keys.run_lease(run_id))
        alive = pipe.execute()
        retried = dead = redispatched = 0
        now = time.time()
        for (run_id, since), has_lease in zip(inflight, alive, strict=True):
            if has_lease:
                continue
            run = self.runs.get(run_id)
            if run is None or run.status.terminal:
                tenant = run.tenant if run else "default"
                self._forget(keys=[keys.run(run_id), keys.INFLIGHT, keys.tenant_inflight(tenant)], args=[run_id])
            elif run.status == "running":
                retried, dead = self._worker_died(run, retried, dead)
            elif now - since >= self.dispatch_timeout and self._redispatch_run(run):
                redispatched += 1
                log.warning(
                    "run %s was dispatched %.0fs ago and never claimed: dispatching it again", run_id, now - since
                )
        return ReapReport(retried, dead, redispatched)

    def _worker_died(self, run: Run, retried: int, dead: int) -> tuple[int, int]:
        error = {"type": "worker_died", "message": f"worker {run.worker or '?'} stopped renewing its lease mid-run"}
        delay = full_jitter(max(run.attempts, 1), base=self.retry_base, cap=self.retry_cap)
        result = self.leases.requeue(None, run, error=error, delay=delay)
        if result is RequeueResult.RETRYING:
            log.warning("run %s lost its worker %s; retrying in %.1fs", run.id, run.worker, delay)
            metrics.RUN_RETRIES.labels("worker_died").inc()
            return retried + 1, dead
        if result is RequeueResult.DEAD:
            log.error("run %s lost its worker on its last attempt: dead-lettered", run.id)
            metrics.observe_run_end(run.workflow, "failed", time.time() - run.created_at)
            return retried, dead + 1
        if result is RequeueResult.CANCELED:  # it was being canceled when its worker died: ended here
            metrics.observe_run_end(run.workflow, "canceled", time.time() - run.created_at)
        return retried, dead

    def redispatch(self, run: Run) -> bool:
        """Put a dispatched, unclaimed run back at the head of its backlog (no attempt used)."""
        return self._redispatch_run(run)

    def _redispatch_run(self, run: Run) -> bool:
        args = [run.id, run.tenant, str(run.dispatches), keys.SCHEDULER_WAKE]
        return bool(self._redispatch(keys=back_in_line_keys(run), args=args))
