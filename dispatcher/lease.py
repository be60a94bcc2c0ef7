"""Per-run leases with attempt fencing: a run executes, and ends, exactly once.

RQ delivers a job at least once (a stale ``rq:intermediate`` entry can run a
finished job again 60 s later; see RQ-NOTES). So the worker that picks up a
run first *claims* it: the claim bumps the run's attempt number and stores
``<worker>|<attempt>`` as the lease, with a TTL the holder keeps renewing.
Every later write to the run (progress, completion, requeue) names that token
and is refused once the token is no longer the lease: a worker that lost its
lease (paused, partitioned, or superseded after it was presumed dead) can
write nothing. Each step is one Lua script, so no two processes interleave.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from redis import Redis

from dispatcher import keys
from dispatcher.runs import PRIORITIES, Output

_CLAIM = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing', ''} end
if status ~= 'queued' and status ~= 'running' then return {'done', status} end
local holder = redis.call('GET', KEYS[2])
if holder then return {'busy', holder} end
local attempts = tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0')
local max_attempts = tonumber(redis.call('HGET', KEYS[1], 'max_attempts') or '3')
for i = 3, #KEYS do redis.call('ZREM', KEYS[i], ARGV[4]) end
if attempts >= max_attempts then
  -- the previous attempt died holding the run and none is left
  redis.call('HSET', KEYS[1], 'status', 'failed', 'finished_at', ARGV[3], 'error', ARGV[5], 'worker', '')
  redis.call('PUBLISH', ARGV[6], 'failed')
  return {'exhausted', tostring(attempts)}
end
local attempt = attempts + 1
local token = ARGV[1] .. '|' .. attempt
redis.call('SET', KEYS[2], token, 'PX', ARGV[2])
redis.call('HSET', KEYS[1], 'status', 'running', 'attempts', attempt, 'worker', ARGV[1],
           'started_at', ARGV[3], 'progress', '0', 'node', '', 'comfyui_url', ARGV[7])
return {'ok', tostring(attempt)}
"""

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

_UPDATE = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
"""

_COMPLETE = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'finished_at', ARGV[3], 'error', ARGV[4], 'outputs', ARGV[5],
           'node', '')
if ARGV[2] == 'succeeded' then redis.call('HSET', KEYS[1], 'progress', '1.0') end
redis.call('DEL', KEYS[2])
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('EXPIRE', KEYS[3], ARGV[6])
redis.call('PUBLISH', ARGV[7], ARGV[2])
return 1
"""

_REQUEUE = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'status', 'queued', 'error', ARGV[2], 'worker', '', 'node', '', 'progress', '0')
redis.call('DEL', KEYS[2])
redis.call('ZADD', KEYS[3], redis.call('HGET', KEYS[1], 'created_at'), ARGV[3])
return 1
"""


class ClaimResult(StrEnum):
    OK = "ok"
    MISSING = "missing"  # no such run (expired or never existed)
    DONE = "done"  # already ended: a duplicate delivery
    BUSY = "busy"  # another worker holds a live lease
    EXHAUSTED = "exhausted"  # earlier attempts died and none is left; the run is now failed


@dataclass(frozen=True)
class Lease:
    """The right to execute one attempt of one run."""

    run_id: str
    worker: str
    attempt: int

    @property
    def token(self) -> str:
        return f"{self.worker}|{self.attempt}"


@dataclass(frozen=True)
class Claim:
    result: ClaimResult
    lease: Lease | None = None
    detail: str = ""


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

    def claim(self, run_id: str, worker: str, *, comfyui_url: str = "") -> Claim:
        exhausted = json.dumps({"type": "attempts_exhausted", "message": "every attempt of this run died mid-run"})
        queued_keys = [keys.queued(p) for p in PRIORITIES]
        raw = self._claim(
            keys=[keys.run(run_id), keys.run_lease(run_id), *queued_keys],
            args=[
                worker,
                self.ttl_ms,
                repr(time.time()),
                run_id,
                exhausted,
                keys.run_done_channel(run_id),
                comfyui_url,
            ],
        )
        result, detail = (_s(raw[0]), _s(raw[1]))
        if result == ClaimResult.OK:
            return Claim(ClaimResult.OK, Lease(run_id, worker, int(detail)))
        return Claim(ClaimResult(result), None, detail)

    def renew(self, lease: Lease) -> bool:
        """Extend the lease; False means it was lost and the holder must stop."""
        return bool(self._renew(keys=[keys.run_lease(lease.run_id)], args=[lease.token, self.ttl_ms]))

    def update(self, lease: Lease, **fields: Any) -> bool:
        """Write fields of a running run (progress, node, ...) if the lease is still held."""
        flat: list[str] = []
        for name, value in fields.items():
            flat += [name, value if isinstance(value, str) else json.dumps(value)]
        return bool(
            self._update(keys=[keys.run(lease.run_id), keys.run_lease(lease.run_id)], args=[lease.token, *flat])
        )

    def complete(
        self, lease: Lease, status: str, *, error: dict[str, Any] | None = None, outputs: list[Output] | None = None
    ) -> bool:
        """End the run (succeeded, failed or canceled); False if the lease was lost, and nothing was written."""
        from dataclasses import asdict

        return bool(
            self._complete(
                keys=[keys.run(lease.run_id), keys.run_lease(lease.run_id), keys.run_graph(lease.run_id)],
                args=[
                    lease.token,
                    status,
                    repr(time.time()),
                    json.dumps(error) if error is not None else "",
                    json.dumps([asdict(o) for o in outputs or []]),
                    self.run_ttl,
                    keys.run_done_channel(lease.run_id),
                ],
            )
        )

    def requeue(self, lease: Lease, priority: str, *, error: dict[str, Any]) -> bool:
        """Give the run back to the queue for another attempt; False if the lease was lost."""
        return bool(
            self._requeue(
                keys=[keys.run(lease.run_id), keys.run_lease(lease.run_id), keys.queued(priority)],
                args=[lease.token, json.dumps(error), lease.run_id],
            )
        )


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
