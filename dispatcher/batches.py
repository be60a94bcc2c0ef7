"""Batches: the runs one ``POST /v1/runs/batch`` created, followed as one thing.

A batch is a hash (``keys.batch``: tenant, created_at, total, left, sealed, on_done_url, fired) and the list of
its run ids in item order (``keys.batch_runs``). The scripts keep the counts where the runs change: the one
that stores a run of a batch adds it (``total`` and ``left`` up by one, its id appended), the ones that end a
run take it off ``left`` (:data:`LUA_BATCH`, called by ``announce``, which every ending script calls once).
The batch is *sealed* once every item of its request was stored; the script that finds it both sealed and
with nothing left, whichever comes last, fires its ``on_batch_done_url`` callback: exactly once (``fired``),
whatever the runs' outcomes. Counts by status, GPU-seconds and the ETA are read from the runs' records.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from redis import Redis

from dispatcher import keys
from dispatcher.errors import BatchNotFound
from dispatcher.runs import Run, RunStatus

MAX_ITEMS = 1000
WEBHOOK_STREAM_MAXLEN = 100_000  # as dispatcher.events' (the same stream)
BATCH_DONE = "batch.done"

LUA_BATCH = f"""
local function batch_finish(batch_id)
  local key = '{keys.NS}:batch:' .. batch_id
  if redis.call('HSETNX', key, 'fired', '1') == 1 and redis.call('HEXISTS', key, 'on_done_url') == 1 then
    redis.call('XADD', '{keys.WEBHOOK_EVENTS}', 'MAXLEN', '~', {WEBHOOK_STREAM_MAXLEN}, '*',
               'batch', batch_id, 'type', '{BATCH_DONE}')
  end
end
local function batch_join(run_key, run_id)
  local batch_id = redis.call('HGET', run_key, 'batch')
  if not batch_id then return end
  local key = '{keys.NS}:batch:' .. batch_id
  redis.call('HINCRBY', key, 'total', 1)
  redis.call('HINCRBY', key, 'left', 1)
  redis.call('RPUSH', key .. ':runs', run_id)
end
local function batch_end(batch_id)
  if not batch_id or batch_id == '' then return end
  local key = '{keys.NS}:batch:' .. batch_id
  if redis.call('EXISTS', key) == 0 then return end
  local left = redis.call('HINCRBY', key, 'left', -1)
  if left <= 0 and redis.call('HGET', key, 'sealed') == '1' then batch_finish(batch_id) end
end
local function batch_reopen(batch_id)
  if not batch_id or batch_id == '' then return end
  local key = '{keys.NS}:batch:' .. batch_id
  if redis.call('EXISTS', key) == 1 then redis.call('HINCRBY', key, 'left', 1) end
end
"""
"""Lua ``batch_join(run_key, run_id)`` (a script storing a run: count it in its batch, if it has one),
``batch_end(batch_id)`` (a run of it ended), ``batch_reopen(batch_id)`` (a dead-lettered run of it is queued
again: its callback, if fired, does not fire again) and ``batch_finish(batch_id)`` (fire the callback, once)."""

_SEAL = (
    LUA_BATCH
    + """
-- KEYS: batch, its runs. ARGV: batch_id, then its runs' ids in the order of the request's items.
-- Every item of the request is stored: the batch is done when nothing is left. A batch that got no run
-- (every item refused, or replayed: those runs are counted in the batches that made them) is dropped.
if tonumber(redis.call('HGET', KEYS[1], 'total') or '0') == 0 then
  redis.call('DEL', KEYS[1], KEYS[2])
  return 0
end
-- The runs joined in the order their scripts ran (a cache hit is stored on its own, ahead of its chunk):
-- the list is put in the items' order, which the answer and the batch's pages follow.
if #ARGV > 1 and redis.call('LLEN', KEYS[2]) == #ARGV - 1 then
  redis.call('DEL', KEYS[2])
  for i = 2, #ARGV, 1000 do redis.call('RPUSH', KEYS[2], unpack(ARGV, i, math.min(i + 999, #ARGV))) end
end
redis.call('HSET', KEYS[1], 'sealed', '1')
if tonumber(redis.call('HGET', KEYS[1], 'left') or '0') <= 0 then batch_finish(ARGV[1]) end
return 1
"""
)


def new_batch_id() -> str:
    return "b_" + secrets.token_hex(12)


@dataclass(frozen=True)
class Batch:
    """A batch as its record says, with its runs' counts by status and their GPU-seconds."""

    id: str
    tenant: str
    created_at: float
    total: int
    on_done_url: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    gpu_seconds: float = 0.0

    @property
    def ended(self) -> int:
        return sum(self.counts.get(s.value, 0) for s in RunStatus if s.terminal)

    @property
    def done(self) -> bool:
        return self.ended >= self.total


class BatchStore:
    """Batches in Redis (``redis`` decodes responses)."""

    def __init__(self, redis: Redis, *, ttl_seconds: int) -> None:
        self.redis = redis
        self.ttl = ttl_seconds
        self._seal = redis.register_script(_SEAL)

    def open(self, batch_id: str, tenant: str, on_done_url: str | None) -> None:
        """Create the batch before its runs are stored (their scripts count them in it)."""
        record = {"tenant": tenant, "created_at": repr(time.time()), "total": "0", "left": "0"}
        if on_done_url:
            record["on_done_url"] = on_done_url
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(keys.batch(batch_id), mapping=dict(record.items()))
        # Kept as long as finished runs are: the batch ends with its runs at the latest.
        pipe.expire(keys.batch(batch_id), 2 * self.ttl)
        pipe.execute()

    def seal(self, batch_id: str, run_ids: Sequence[str] = ()) -> bool:
        """Every item was stored (or refused): from now on the batch is done when its last run ends. ``run_ids``:
        the runs the request made, in its items' order. False when it made none: the batch is dropped."""
        if not self._seal(keys=[keys.batch(batch_id), keys.batch_runs(batch_id)], args=[batch_id, *run_ids]):
            return False
        self.redis.expire(keys.batch_runs(batch_id), 2 * self.ttl)
        return True

    def get(self, batch_id: str, tenant: str) -> Batch:
        """The batch with its counts; BatchNotFound if it is unknown, or another tenant's (as if unknown)."""
        record: dict[str, str] = self.redis.hgetall(keys.batch(batch_id))  # type: ignore[assignment]
        if not record or record.get("tenant") != tenant:
            raise BatchNotFound(batch_id)
        run_ids: list[str] = self.redis.lrange(keys.batch_runs(batch_id), 0, -1)  # type: ignore[assignment]
        counts: dict[str, int] = {s.value: 0 for s in RunStatus}
        gpu = 0.0
        pipe = self.redis.pipeline(transaction=False)
        for run_id in run_ids:
            pipe.hmget(keys.run(run_id), "status", "gpu_seconds")
        for status, seconds in pipe.execute():
            if status:
                counts[status] = counts.get(status, 0) + 1
                gpu += float(seconds or 0.0)
        return Batch(
            id=batch_id,
            tenant=tenant,
            created_at=float(record.get("created_at") or 0.0),
            total=int(record.get("total") or 0),
            on_done_url=record.get("on_done_url", ""),
            counts=counts,
            gpu_seconds=gpu,
        )

    def runs(self, batch_id: str, *, start: int, count: int) -> list[Run]:
        """``count`` of the batch's runs from item ``start`` (those whose records still exist)."""
        run_ids: list[str] = self.redis.lrange(keys.batch_runs(batch_id), start, start + count - 1)  # type: ignore[assignment]
        pipe = self.redis.pipeline(transaction=False)
        for run_id in run_ids:
            pipe.hgetall(keys.run(run_id))
        return [Run.from_redis(data) for data in pipe.execute() if data]

    def run_ids(self, batch_id: str) -> list[str]:
        found: list[str] = self.redis.lrange(keys.batch_runs(batch_id), 0, -1)  # type: ignore[assignment]
        return found
