"""The result cache: a run identical to one that succeeded moments ago gets its outputs without a GPU.

Opt-in: a workflow whose manifest says ``"cache": true``, or a run whose body says ``"cache": true``
(``"cache": false`` opts a run out of its workflow's cache). And only for runs whose bound graph
fixes every seed (``binding.fixes_every_seed``): otherwise the same request is meant to give a new
image. Identical means the same tenant and the same ``binding.bound_digest`` (workflow and bound
graph, blind to the per-run file prefix).

Lazy, so no worker knows about it: creating a cacheable run records ``digest -> run id`` (the
*pointer*); a later identical run looks the pointer up and is served only once that run has
succeeded, and only within ``settings.cache_ttl`` of its end. A pointer naming a run still in
flight is left alone (that run will serve the next ones); a failed or stale one is replaced.

A hit is stored as a new run, already ``succeeded``, carrying the earlier run's outputs (the same
storage keys) and a ``cached_from`` field; its event stream gets ``queued``, the ``output`` events
and ``done``, so SSE clients and webhooks see an ordinary life. It never reaches the scheduler.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from redis import Redis

from dispatcher import keys
from dispatcher.binding import Bound, bound_digest, fixes_every_seed
from dispatcher.errors import ParameterError
from dispatcher.events import LUA_EMIT
from dispatcher.idempotency import LUA_IDEMPOTENCY, IdempotencyClaim
from dispatcher.listing import LUA_INDEX
from dispatcher.runs import Run, RunStatus, RunStore
from dispatcher.workflows import Workflow

log = logging.getLogger(__name__)

"""Seconds after an earlier run's success during which it serves identical runs (``settings.cache_ttl``)."""

# How long a pointer waits for its run to be dispatched, on top of the run's own time limit and the
# cache TTL; a run still queued after that is simply not served from (its identical followers run).
POINTER_QUEUE_ALLOWANCE = 3600.0

NO_POINTER = f"{keys.NS}:cache:-"
"""Stands in the submit script's KEYS when a run is not cacheable (a pointer TTL of 0 leaves it untouched)."""

_SERVE = (
    LUA_EMIT
    + LUA_INDEX
    + LUA_IDEMPOTENCY
    + """
-- KEYS: run, graph, recent, idempotency
-- ARGV: run_id, graph, ttl, recent_max, done channel, queued event, done event, fingerprint, idempotency ttl,
--       outputs (JSON array), field, value, ...
local seen = idem_seen(KEYS[4], ARGV[8])
if seen then return seen end
-- the record first: emit() looks at its callbacks to feed the webhook sender
for i = 11, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
local stored = redis.call('HMGET', KEYS[1], 'tenant', 'created_at')
index_run(ARGV[1], stored[1], stored[2], 2 * tonumber(ARGV[3]))  -- as listing.index_horizon
batch_join(KEYS[1], ARGV[1])
redis.call('LPUSH', KEYS[3], ARGV[1])
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[4]) - 1)
emit(ARGV[1], 'queued', ARGV[6])
for _, output in ipairs(cjson.decode(ARGV[10])) do emit(ARGV[1], 'output', output) end
emit(ARGV[1], 'done', ARGV[7])
seal(ARGV[1], ARGV[3])
idem_keep(KEYS[4], ARGV[8], ARGV[1], ARGV[9])
announce(ARGV[1], ARGV[5], 'succeeded')
return {1, ARGV[1]}
"""
)


def pointer_key(tenant: str, digest: str) -> str:
    """String with a TTL: the id of the run whose result serves ``digest`` for ``tenant``."""
    return f"{keys.NS}:cache:{tenant}:{digest}"


def wants_cache(workflow: Workflow, body: Mapping[str, Any]) -> bool:
    """Whether the run asks for the cache: its ``"cache"`` if given (true or false), else its workflow's."""
    value = body.get("cache")
    if value is None:
        return workflow.cache
    if not isinstance(value, bool):
        raise ParameterError("cache", "must be true or false")
    return value


def is_fresh(source: Run, *, ttl: float, now: float) -> bool:
    """Whether ``source`` may serve an identical run now: it succeeded, at most ``ttl`` seconds ago."""
    if source.status is not RunStatus.SUCCEEDED or source.finished_at is None:
        return False
    return now - source.finished_at <= ttl


def cached_run(run: Run, source: Run, *, now: float) -> Run:
    """``run`` (freshly built, queued) as a cache hit: already succeeded, with ``source``'s outputs."""
    return replace(
        run,
        status=RunStatus.SUCCEEDED,
        progress=1.0,
        outputs=list(source.outputs),
        started_at=now,
        finished_at=now,
        cached_from=source.id,
    )


@dataclass(frozen=True)
class CachePlan:
    """What submitting one run does with the cache: serve it from ``source``, or record it (``pointer_ttl`` > 0)."""

    pointer: str = NO_POINTER
    pointer_ttl: int = 0
    source: Run | None = None


class ResultCache:
    """Looks runs up in the cache and stores hits; one per Submitter."""

    def __init__(self, redis: Redis, runs: RunStore, *, ttl: float, run_ttl_seconds: int) -> None:
        self.redis = redis
        self.runs = runs
        self.ttl = ttl
        self.run_ttl = run_ttl_seconds
        self._serve = redis.register_script(_SERVE)

    def plan(
        self, workflow: Workflow, body: Mapping[str, Any], bound: Bound, *, tenant: str, timeout: float
    ) -> CachePlan:
        """Decide for a run about to be stored; ParameterError for a ``"cache"`` that is not a boolean."""
        if not wants_cache(workflow, body):
            return CachePlan()
        if not fixes_every_seed(workflow, bound):
            log.debug("run of %s not cached: a seed is not fixed", workflow.id)
            return CachePlan()
        pointer = pointer_key(tenant, bound_digest(workflow.id, bound))
        earlier_id = self.redis.get(pointer)
        earlier = self.runs.get(str(earlier_id)) if earlier_id else None
        if earlier is not None and earlier.tenant == tenant:
            if is_fresh(earlier, ttl=self.ttl, now=time.time()):
                return CachePlan(pointer=pointer, source=earlier)
            if not earlier.status.terminal:
                return CachePlan(pointer=pointer)  # in flight: it serves the next ones once it succeeds
        return CachePlan(pointer=pointer, pointer_ttl=math.ceil(self.ttl + timeout + POINTER_QUEUE_ALLOWANCE))

    def serve(self, run: Run, source: Run, graph: dict[str, Any], claim: IdempotencyClaim) -> tuple[int, str]:
        """Store ``run`` as a hit on ``source``; the script's (code, run id): 1 stored, or an idempotency code."""
        hit = cached_run(run, source, now=time.time())
        flat: list[str] = []
        for name, value in hit.to_redis().items():
            flat += [name, value]
        queued = {"workflow": hit.workflow, "priority": hit.priority, "tenant": hit.tenant, "cached_from": source.id}
        code, run_id = self._serve(
            keys=[keys.run(hit.id), keys.run_graph(hit.id), keys.RECENT_RUNS, claim.redis_key],
            args=[
                hit.id,
                json.dumps(graph),
                self.run_ttl,
                keys.RECENT_RUNS_MAX,
                keys.run_done_channel(hit.id),
                json.dumps(queued),
                json.dumps({"status": RunStatus.SUCCEEDED, "cached_from": source.id}),
                claim.fingerprint,
                claim.ttl,
                json.dumps([asdict(o) for o in hit.outputs]),
                *flat,
            ],
        )
        if int(code) == 1:
            log.info("run %s of %s for %s served from run %s", hit.id, hit.workflow, hit.tenant, source.id)
        return int(code), str(run_id)
