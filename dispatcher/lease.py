"""Per-run leases with attempt fencing: a run executes, and ends, exactly once.

RQ delivers a job at least once (a stale ``rq:intermediate`` entry can run a
finished job again 60 s later; see RQ-NOTES). Every RQ job carries the run's
*dispatch number*; the worker that picks it up first *claims* the run: the
claim checks the number (an older job is stale), bumps the attempt and stores
``<worker>|<attempt>`` as the lease, with a TTL the holder keeps renewing.
Every later write (progress, completion, requeue) names that token and is
refused once it is no longer the lease: a worker that lost its lease (paused,
partitioned, presumed dead) writes nothing. Each step is one Lua script.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from redis import Redis

from dispatcher import keys
from dispatcher.eta import LUA_NOTE_SECONDS
from dispatcher.events import LUA_EMIT
from dispatcher.routing.lua import LUA_UNROUTE
from dispatcher.runs import Output, Run
from dispatcher.scheduling.dispatch import LUA_TELL_IDLE, LUA_WAITING
from dispatcher.usage import USAGE_TTL_SECONDS, usage_day

_CLAIM = (
    LUA_EMIT
    + """
-- KEYS: run, lease, INFLIGHT, graph[, RQ's intermediate list, the job's hash]. Returns {result, detail} or,
-- claimed, {'ok', attempt, graph, record}: the worker needs both at once, and reading them here saves it two
-- round trips per run. With the last two keys (ARGV[7]: the job's id), RQ's copy of the popped job goes first,
-- whatever the claim's answer: claimed, the lease guards the run from here on; not, the job is spent.
if KEYS[5] then
  redis.call('LREM', KEYS[5], 1, ARGV[7])
  redis.call('DEL', KEYS[6])
end
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing', ''} end
if status == 'running' then return {'busy', redis.call('GET', KEYS[2]) or ''} end
if status ~= 'queued' then return {'done', status} end
if redis.call('HGET', KEYS[1], 'dispatches') ~= ARGV[5] then return {'stale', ''} end
if redis.call('ZSCORE', KEYS[3], ARGV[4]) == false then return {'stale', ''} end
local attempt = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('SET', KEYS[2], ARGV[1] .. '|' .. attempt, 'PX', ARGV[2])
redis.call('HSET', KEYS[1], 'status', 'running', 'worker', ARGV[1], 'started_at', ARGV[3], 'progress', '0',
           'node', '', 'comfyui_url', ARGV[6])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
emit(ARGV[4], 'started', {attempt = attempt, worker = ARGV[1], comfyui_url = ARGV[6]})
return {'ok', tostring(attempt), redis.call('GET', KEYS[4]) or '', redis.call('HGETALL', KEYS[1])}
"""
)

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

_UPDATE = (
    LUA_EMIT
    + """
-- ARGV: token, run_id, field, value, ...; a progress field is also a progress event
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
local progress, node = nil, ''
for i = 3, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  if ARGV[i] == 'progress' then progress = tonumber(ARGV[i + 1]) elseif ARGV[i] == 'node' then node = ARGV[i + 1] end
end
if progress then emit(ARGV[2], 'progress', {progress = progress, node = node}) end
return 1
"""
)

# Ending a run, shared by complete (the lease holder) and the scheduler's reaper (no holder left).
# KEYS: run, graph, INFLIGHT, tenant inflight, DEAD_LETTER, usage (the tenant's day); ARGV (from 2): status,
# now, error, outputs, ttl, run_id, done channel, wake channel, dead (1: also list it in the dead-letter set),
# GPU seconds of the attempt that ends, usage ttl. ``spent`` adds an attempt's GPU time to the run and to
# the tenant's day; ``finish`` counts the run in the day once it ends (if it ever reached a worker).
_END = (
    LUA_EMIT
    + LUA_UNROUTE
    + LUA_WAITING
    + LUA_NOTE_SECONDS
    + """
local function spent(a)
  local gpu = tonumber(ARGV[a + 9])
  if gpu and gpu > 0 then
    redis.call('HINCRBYFLOAT', KEYS[1], 'gpu_seconds', ARGV[a + 9])
    redis.call('HINCRBYFLOAT', KEYS[6], 'gpu_seconds', ARGV[a + 9])
    redis.call('EXPIRE', KEYS[6], ARGV[a + 10])
  end
end
local function finish(a)
  if tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0') > 0 then
    redis.call('HINCRBY', KEYS[6], 'runs', 1)
    redis.call('EXPIRE', KEYS[6], ARGV[a + 10])
  end
  redis.call('HSET', KEYS[1], 'status', ARGV[a], 'finished_at', ARGV[a + 1], 'error', ARGV[a + 2],
             'outputs', ARGV[a + 3], 'node', '', 'worker', '')
  if ARGV[a] == 'succeeded' then
    redis.call('HSET', KEYS[1], 'progress', '1.0')
    note_seconds(KEYS[1])
  end
  redis.call('ZREM', KEYS[3], ARGV[a + 5])
  unroute(KEYS[1], ARGV[a + 5])
  redis.call('SREM', KEYS[4], ARGV[a + 5])
  if ARGV[a + 8] == '1' then
    redis.call('ZADD', KEYS[5], ARGV[a + 1], ARGV[a + 5])
    redis.call('PERSIST', KEYS[1])  -- kept until requeued or removed from the dead-letter set
  else
    redis.call('EXPIRE', KEYS[1], ARGV[a + 4])
    redis.call('EXPIRE', KEYS[2], ARGV[a + 4])
  end
  local run_id, err = ARGV[a + 5], ARGV[a + 2]
  if err == '' then err = 'null' end
  if ARGV[a] == 'succeeded' then
    for _, output in ipairs(cjson.decode(ARGV[a + 3])) do emit(run_id, 'output', output) end
    emit(run_id, 'done', '{"status":"succeeded"}')
  elseif ARGV[a] == 'failed' then
    emit(run_id, 'error', '{"status":"failed","error":' .. err .. '}')
  else
    emit(run_id, 'canceled', '{"status":"canceled","error":' .. err .. '}')
  end
  seal(run_id, ARGV[a + 4])
  announce(run_id, ARGV[a + 6], ARGV[a])
  if runs_waiting() then redis.call('PUBLISH', ARGV[a + 7], 'free') end
end
"""
)

_COMPLETE = (
    _END
    + LUA_TELL_IDLE
    + """
-- KEYS: as _END, then lease; ARGV[1]: token, then as _END from 2, then idle ('1': the worker holds no other run)
if redis.call('GET', KEYS[7]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[7])
spent(2)
finish(2)
if ARGV[13] == '1' then tell_idle(KEYS[3], ARGV[9]) end
return 1
"""
)

# Back to queued after a transient failure, in DELAYED until its backoff ends; or, with no attempt
# left (or a cancel pending), ended for good. KEYS: as _END, then lease, DELAYED; ARGV[1]: token ('' for
# the reaper, when no lease is left), then as _END from 2 (status 'failed', ...), then due.
_REQUEUE = (
    _END
    + """
if ARGV[1] ~= '' then
  if redis.call('GET', KEYS[7]) ~= ARGV[1] then return 0 end
  redis.call('DEL', KEYS[7])
elseif redis.call('EXISTS', KEYS[7]) == 1 then
  return 0
end
spent(2)
if redis.call('HGET', KEYS[1], 'cancel_requested') == '1' then
  ARGV[2] = 'canceled'
  ARGV[10] = '0'
  finish(2)
  return 3
end
local attempts = tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0')
local max_attempts = tonumber(redis.call('HGET', KEYS[1], 'max_attempts') or '3')
if attempts >= max_attempts then
  finish(2)
  return 2
end
redis.call('HSET', KEYS[1], 'status', 'queued', 'error', ARGV[4], 'worker', '', 'node', '', 'progress', '0')
redis.call('ZREM', KEYS[3], ARGV[7])
unroute(KEYS[1], ARGV[7])
redis.call('SREM', KEYS[4], ARGV[7])
-- waits out its backoff in DELAYED; the dispatch script then puts it back at its old place in the backlog
redis.call('ZADD', KEYS[8], ARGV[13], ARGV[7])
local err = ARGV[4]
if err == '' then err = 'null' end
emit(ARGV[7], 'retrying', '{"attempt":' .. attempts .. ',"retry_at":' .. ARGV[13] .. ',"error":' .. err .. '}')
redis.call('PUBLISH', ARGV[9], 'retry')
return 1
"""
)


LUA_BACK_IN_LINE = (
    LUA_UNROUTE
    + """
-- back_in_line(run_id, tenant): out of flight, back into its backlog at its old place (its creation time).
-- KEYS (see back_in_line_keys): run, lease, INFLIGHT, tenant inflight, backlog, rotation
local function back_in_line(run_id, tenant)
  redis.call('ZREM', KEYS[3], run_id)
  unroute(KEYS[1], run_id)
  redis.call('SREM', KEYS[4], run_id)
  if redis.call('ZCARD', KEYS[5]) == 0 then
    redis.call('LREM', KEYS[6], 0, tenant)
    redis.call('RPUSH', KEYS[6], tenant)
  end
  redis.call('ZADD', KEYS[5], redis.call('HGET', KEYS[1], 'created_at'), run_id)
end
"""
)
"""The Lua function ``back_in_line``, shared by the worker's release and the reaper's redispatch."""


def back_in_line_keys(run: Run) -> list[str]:
    """The KEYS of a script using ``back_in_line``."""
    return [
        keys.run(run.id),
        keys.run_lease(run.id),
        keys.INFLIGHT,
        keys.tenant_inflight(run.tenant),
        keys.backlog(run.tenant, run.priority),
        keys.rotation(run.priority),
    ]


# A stopping worker hands back a run that never started on its ComfyUI: queued again at its old place, the
# attempt not counted. KEYS: back_in_line's. ARGV: token, run_id, tenant, wake channel.
# Returns 1 released, 0 lease lost, 2 a cancel is pending.
_RELEASE = (
    LUA_EMIT
    + LUA_BACK_IN_LINE
    + """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[1], 'cancel_requested') == '1' then return 2 end
redis.call('DEL', KEYS[2])
redis.call('HINCRBY', KEYS[1], 'attempts', -1)
redis.call('HSET', KEYS[1], 'status', 'queued', 'worker', '', 'node', '', 'progress', '0')
back_in_line(ARGV[2], ARGV[3])
local run = redis.call('HMGET', KEYS[1], 'workflow', 'priority')
emit(ARGV[2], 'queued', {workflow = run[1], priority = run[2], tenant = ARGV[3], reason = 'handed_back'})
redis.call('PUBLISH', ARGV[4], 'redispatch')
return 1
"""
)


class ClaimResult(StrEnum):
    OK = "ok"
    MISSING = "missing"  # no such run (expired or never existed)
    DONE = "done"  # already ended: a duplicate delivery
    BUSY = "busy"  # running under another worker's lease
    STALE = "stale"  # an older dispatch of the run (RQ redelivered it); the current one is elsewhere


class ReleaseResult(StrEnum):
    LOST = "lost"  # the lease was gone: nothing written
    RELEASED = "released"  # queued again, at its old place
    CANCELING = "canceling"  # a cancel is pending: end it as canceled instead


class RequeueResult(StrEnum):
    LOST = "lost"  # the lease was gone: nothing written
    RETRYING = "retrying"
    DEAD = "dead"  # no attempt left: failed, and listed in the dead-letter set
    CANCELED = "canceled"  # a cancel was pending: ended as canceled


@dataclass(frozen=True)
class Lease:
    """The right to execute one attempt of one run."""

    run_id: str
    worker: str
    attempt: int

    @property
    def token(self) -> str:
        return f"{self.worker}|{self.attempt}"


@dataclass
class PoppedJob:
    """An RQ job a worker popped: the id RQ moved into its intermediate list, and the job's hash; ``forgotten``
    once a claim took both away."""

    intermediate_key: str
    job_id: str
    job_key: str
    forgotten: bool = False


@dataclass(frozen=True)
class Claim:
    result: ClaimResult
    lease: Lease | None = None
    detail: str = ""
    run: Run | None = None  # claimed: the record as the claim left it, and the bound graph (JSON)
    graph: str = ""


class Leases:
    """The fenced operations on runs, each an atomic Lua script."""

    def __init__(self, redis: Redis, *, ttl_seconds: float, run_ttl_seconds: int) -> None:
        self.redis = redis
        self.ttl_ms = int(ttl_seconds * 1000)
        self.run_ttl = run_ttl_seconds
        self._claim = redis.register_script(_CLAIM)
        self._renew = redis.register_script(_RENEW)
        self._update = redis.register_script(_UPDATE)
        self._complete = redis.register_script(_COMPLETE)
        self._requeue = redis.register_script(_REQUEUE)
        self._release = redis.register_script(_RELEASE)

    def claim(
        self, run_id: str, worker: str, dispatch: int, *, comfyui_url: str = "", popped: PoppedJob | None = None
    ) -> Claim:
        """Take the run's lease for dispatch number ``dispatch``; claimed, the Claim carries the run and its graph.
        ``popped``: the RQ job it came in leaves RQ's intermediate list and is deleted in the same step."""
        run_keys = [keys.run(run_id), keys.run_lease(run_id), keys.INFLIGHT, keys.run_graph(run_id)]
        args: list[str | int] = [worker, self.ttl_ms, repr(time.time()), run_id, str(dispatch), comfyui_url]
        if popped is not None:
            run_keys += [popped.intermediate_key, popped.job_key]
            args.append(popped.job_id)
        raw = self._claim(keys=run_keys, args=args)
        if popped is not None:
            popped.forgotten = True
        result, detail = (_s(raw[0]), _s(raw[1]))
        if result == ClaimResult.OK:
            flat = [_s(v) for v in raw[3]]
            run = Run.from_redis(dict(zip(flat[::2], flat[1::2], strict=True)))
            return Claim(ClaimResult.OK, Lease(run_id, worker, int(detail)), run=run, graph=_s(raw[2]))
        return Claim(ClaimResult(result), None, detail)

    def renew(self, lease: Lease) -> bool:
        """Extend the lease; False means it was lost and the holder must stop."""
        return self.renew_all([lease])[0]

    def renew_all(self, leases: list[Lease]) -> list[bool]:
        """Extend every lease in one round trip; False where one was lost (its holder must stop)."""
        pipe = self.redis.pipeline(transaction=False)
        for lease in leases:
            self._renew(keys=[keys.run_lease(lease.run_id)], args=[lease.token, self.ttl_ms], client=pipe)
        return [bool(r) for r in pipe.execute()]

    def update(self, lease: Lease, **fields: Any) -> bool:
        """Write fields of a running run (progress, node, ...) if the lease is still held."""
        flat: list[str] = []
        for name, value in fields.items():
            flat += [name, value if isinstance(value, str) else json.dumps(value)]
        run_keys = [keys.run(lease.run_id), keys.run_lease(lease.run_id)]
        return bool(self._update(keys=run_keys, args=[lease.token, lease.run_id, *flat]))

    def complete(
        self,
        lease: Lease,
        run: Run,
        status: str,
        *,
        error: dict[str, Any] | None = None,
        outputs: list[Output] | None = None,
        gpu_seconds: float = 0.0,
        idle: bool = False,
    ) -> bool:
        """End the run (succeeded, failed or canceled); False if the lease was lost, and nothing was written.

        ``gpu_seconds``: how long ComfyUI executed this attempt, added to the run and to its tenant's day.
        ``idle``: the worker holds no other run; the scheduler is told as :func:`tell_idle` tells it.
        """
        args = [
            lease.token,
            *self._end_args(run, status, error, outputs or [], dead=False, gpu=gpu_seconds),
            "1" if idle else "0",
        ]
        return bool(self._complete(keys=[*self._end_keys(run), keys.run_lease(run.id)], args=args))

    def requeue(
        self, lease: Lease | None, run: Run, *, error: dict[str, Any], delay: float, gpu_seconds: float = 0.0
    ) -> RequeueResult:
        """After a transient failure: back to the backlog after ``delay`` s, or dead-lettered with no attempt left.

        ``lease`` None is the reaper's case: the holder died, so only a run with no live lease is touched.
        """
        args = [
            lease.token if lease else "",
            *self._end_args(run, "failed", error, [], dead=True, gpu=gpu_seconds),
            repr(time.time() + delay),
        ]
        run_keys = [*self._end_keys(run), keys.run_lease(run.id), keys.DELAYED]
        result = int(self._requeue(keys=run_keys, args=args))
        return [RequeueResult.LOST, RequeueResult.RETRYING, RequeueResult.DEAD, RequeueResult.CANCELED][result]

    def release(self, lease: Lease, run: Run) -> ReleaseResult:
        """Give back a run its prompt never started: queued again at its old place, the attempt not counted."""
        args = [lease.token, run.id, run.tenant, keys.SCHEDULER_WAKE]
        result = int(self._release(keys=back_in_line_keys(run), args=args))
        return [ReleaseResult.LOST, ReleaseResult.RELEASED, ReleaseResult.CANCELING][result]

    def _end_keys(self, run: Run) -> list[str]:
        return [
            keys.run(run.id),
            keys.run_graph(run.id),
            keys.INFLIGHT,
            keys.tenant_inflight(run.tenant),
            keys.DEAD_LETTER,
            keys.usage(run.tenant, usage_day(time.time())),
        ]

    def _end_args(
        self, run: Run, status: str, error: dict[str, Any] | None, outputs: list[Output], *, dead: bool, gpu: float
    ) -> list[str]:
        return [
            status,
            repr(time.time()),
            json.dumps(error) if error is not None else "",
            json.dumps([asdict(o) for o in outputs]),
            str(self.run_ttl),
            run.id,
            keys.run_done_channel(run.id),
            keys.SCHEDULER_WAKE,
            "1" if dead else "0",
            f"{max(gpu, 0.0):.3f}",
            str(USAGE_TTL_SECONDS),
        ]


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
