"""Canceling a run: a queued one never starts; a running one is interrupted on its ComfyUI by its worker."""

from __future__ import annotations

import json
import time
from enum import StrEnum

from redis import Redis

from dispatcher import keys
from dispatcher.errors import Conflict, RunNotFound
from dispatcher.events import LUA_EMIT
from dispatcher.routing.lua import LUA_UNROUTE
from dispatcher.runs import Run
from dispatcher.scheduling.dispatch import LUA_WAITING

_CANCEL = (
    LUA_EMIT
    + LUA_UNROUTE
    + LUA_WAITING
    + """
-- KEYS: run, graph, backlog, DELAYED, INFLIGHT, tenant inflight
-- ARGV: run_id, now, ttl, error, done channel, cancel channel, wake channel
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if status == 'canceled' then return 'already-canceled' end
if status == 'succeeded' or status == 'failed' then return status end
if status == 'running' then
  redis.call('HSET', KEYS[1], 'cancel_requested', '1')
  redis.call('PUBLISH', ARGV[6], ARGV[1])
  return 'canceling'
end
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[1])
unroute(KEYS[1], ARGV[1])
redis.call('SREM', KEYS[6], ARGV[1])
redis.call('HSET', KEYS[1], 'status', 'canceled', 'finished_at', ARGV[2], 'error', ARGV[4], 'node', '', 'worker', '')
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
emit(ARGV[1], 'canceled', '{"status":"canceled","error":' .. ARGV[4] .. '}')
seal(ARGV[1], ARGV[3])
announce(ARGV[1], ARGV[5], 'canceled')
if runs_waiting() then redis.call('PUBLISH', ARGV[7], 'free') end
return 'canceled'
"""
)

CANCELED_ERROR = {"type": "canceled", "message": "canceled by request"}


class CancelResult(StrEnum):
    CANCELED = "canceled"  # it was queued: it is canceled now
    CANCELING = "canceling"  # it is running: its worker interrupts ComfyUI and ends it as canceled
    ALREADY_CANCELED = "already-canceled"  # a cancel sent again (a client retrying): nothing changes


class Canceller:
    def __init__(self, redis: Redis, *, run_ttl_seconds: int) -> None:
        self.redis = redis
        self.run_ttl = run_ttl_seconds
        self._cancel = redis.register_script(_CANCEL)

    def cancel(self, run: Run) -> CancelResult:
        """Cancel ``run``; raises Conflict if it already succeeded or failed, RunNotFound if it vanished. A run
        canceled already answers ALREADY_CANCELED (a cancel is idempotent: a client may send it again)."""
        result = self._cancel(
            keys=[
                keys.run(run.id),
                keys.run_graph(run.id),
                keys.backlog(run.tenant, run.priority),
                keys.DELAYED,
                keys.INFLIGHT,
                keys.tenant_inflight(run.tenant),
            ],
            args=[
                run.id,
                repr(time.time()),
                self.run_ttl,
                json.dumps(CANCELED_ERROR),
                keys.run_done_channel(run.id),
                keys.CANCEL,
                keys.SCHEDULER_WAKE,
            ],
        )
        outcome = result.decode() if isinstance(result, bytes) else str(result)
        if outcome == "missing":
            raise RunNotFound(run.id)
        if outcome in ("canceled", "canceling", "already-canceled"):
            return CancelResult(outcome)
        raise Conflict(f"run {run.id} already ended ({outcome})")
