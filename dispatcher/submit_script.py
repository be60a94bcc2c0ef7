"""The submit script: the one Lua script that stores a run, all or nothing, and what it answers.

It checks the workflow version the run was bound to and offers the run to its API key's bucket
(``dispatcher.admission``), checks and keeps its idempotency key (``dispatcher.idempotency``), checks the
tenant's ``max_queued``, and writes the record, the graph, the backlog entry and the round-robin membership,
so two API processes can never both squeeze past a full queue or a full bucket. A cacheable run is recorded
for the result cache (``dispatcher.cache``). With slots, a dispatch pass (the scheduler's take) follows in the
same step, and the RQ job of the run it takes is written too. :func:`store_call` lays out its keys and
arguments; :func:`parse_stored` reads its answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from dispatcher import keys
from dispatcher.admission import KIND as ADMISSION_KIND
from dispatcher.admission import LUA_BUCKET, Offer
from dispatcher.binding import Bound
from dispatcher.cache import CachePlan
from dispatcher.events import LUA_EMIT
from dispatcher.idempotency import LUA_IDEMPOTENCY, IdempotencyClaim
from dispatcher.listing import LUA_INDEX, index_horizon
from dispatcher.routing.lua import as_routes
from dispatcher.runs import PRIORITIES, Run
from dispatcher.scheduling.dispatch import LUA_TAKE, Taken, parse_taken
from dispatcher.settings import Settings
from dispatcher.workflows.store import Latest, entry_text

RATE_LIMITED = 4  # the script's answer when its admission refused the run
STALE = 5  # its answer when the workflow has a version the caller has not read
NO_ADMISSION = ["", "", "", ""]

SUBMIT = (
    LUA_BUCKET
    + LUA_EMIT
    + LUA_INDEX
    + LUA_IDEMPOTENCY
    + LUA_TAKE
    + """
-- KEYS: run, graph, backlog(tenant, priority), rotation(priority), recent, tenant, backlog x3 (all priorities),
--       idempotency, cache pointer, INFLIGHT, DELAYED, the API key's bucket, the workflow index
-- ARGV: run_id, tenant, score, graph, max_queued_default, recent_max, wake_channel ('': none), event,
--       idempotency fingerprint, idempotency ttl, pointer ttl (0: do not record),
--       routes of the ready workers ('': take nothing; dispatcher.routing.lua), default dispatch rate,
--       default max running, index horizon (seconds), RQ queue name, k, the admission's 4, the workflow check's 2
--       (both below), then k items:
--       the RQ writes that
--       enqueue this run's first job on the queue named ([n, command, args...] each), then field, value, ...
-- Stored, it answers {1, max_queued}; with slots, a dispatch pass follows in the same step (the same take as
-- the scheduler's) and the answer adds what it took and its wait: {1, max_queued, taken, wait, handed}.
-- When the pass took this very run (its first dispatch), its RQ job is written here too (handed = 1).
-- With ARGV[18] (not ''), the run is first offered to the API key's bucket KEYS[14] (ARGV[18..21]: rate, burst,
-- ttl windows, epsilon; the tenant's own limits in KEYS[6] win): denied, it answers {4, ''} and stores nothing;
-- admitted, every answer ends with bucket_offer's (dispatcher.admission), for the RateLimit fields.
-- With ARGV[23] (not ''): the workflow's index entry (KEYS[15], field ARGV[22]) the run was bound with, as
-- this process last read it. A version published (or retired) since answers {5, ''}: nothing done, not even
-- the admission; the caller reads the workflow again and binds the run anew.
-- A replayed key answers before the queue limit: the first run was accepted, whatever the queue holds now.
local base = 24
if ARGV[23] ~= '' and redis.call('HGET', KEYS[15], ARGV[22]) ~= ARGV[23] then return {5, ''} end
local admitted = nil
local function answer(reply)
  if admitted then reply[#reply + 1] = admitted end
  return reply
end
if ARGV[18] ~= '' then
  admitted = bucket_offer(KEYS[14], KEYS[6], ARGV[18], ARGV[19], 1, ARGV[20], ARGV[21], '0')
  if admitted[1] == 0 then return answer({4, ''}) end
end
local seen = idem_seen(KEYS[10], ARGV[9])
if seen then return answer(seen) end
local max_queued = tonumber(redis.call('HGET', KEYS[6], 'max_queued') or ARGV[5])
if max_queued > 0 then
  local queued = redis.call('ZCARD', KEYS[7]) + redis.call('ZCARD', KEYS[8]) + redis.call('ZCARD', KEYS[9])
  if queued >= max_queued then return answer({0, max_queued}) end
end
local writes = tonumber(ARGV[17])
redis.call('HSET', KEYS[1], unpack(ARGV, base + writes, #ARGV))
redis.call('SET', KEYS[2], ARGV[4])
index_run(ARGV[1], ARGV[2], ARGV[3], ARGV[15])
batch_join(KEYS[1], ARGV[1])
if redis.call('ZCARD', KEYS[3]) == 0 then
  redis.call('LREM', KEYS[4], 0, ARGV[2])
  redis.call('RPUSH', KEYS[4], ARGV[2])
end
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
redis.call('LPUSH', KEYS[5], ARGV[1])
redis.call('LTRIM', KEYS[5], 0, tonumber(ARGV[6]) - 1)
emit(ARGV[1], 'queued', ARGV[8])
idem_keep(KEYS[10], ARGV[9], ARGV[1], ARGV[10])
if ARGV[11] ~= '0' then redis.call('SET', KEYS[11], ARGV[1], 'EX', ARGV[11]) end
if ARGV[7] ~= '' then redis.call('PUBLISH', ARGV[7], 'submit') end
if ARGV[12] ~= '' then
  local taken, wait, waiting = take(KEYS[12], KEYS[13], ARGV[12], ARGV[13], ARGV[14])
  local handed = 0
  for i = 1, #taken, 6 do
    if writes > 0 and taken[i] == ARGV[1] and taken[i + 1] == '1' then
      -- the writes name the shared queue: a run routed to a capability set goes to that set's queue
      local queue, key = ARGV[16], 'rq:queue:' .. ARGV[16]
      local routed = queue
      if taken[i + 4] ~= '-' then routed = queue .. ':caps:' .. taken[i + 4] end
      local j = base
      while j < base + writes do
        local n = tonumber(ARGV[j])
        local command = {unpack(ARGV, j + 1, j + n)}
        for c = 2, #command do
          if command[c] == queue then
            command[c] = routed
          elseif command[c] == key then
            command[c] = 'rq:queue:' .. routed
          end
        end
        redis.call(unpack(command))
        j = j + n + 1
      end
      handed = 1
    end
  end
  return answer({1, max_queued, taken, tostring(wait), handed, waiting})
end
return answer({1, max_queued})
"""
)


@dataclass(frozen=True)
class NewRun:
    """A run validated and bound, not stored yet: what storing it takes."""

    run: Run
    bound: Bound
    claim: IdempotencyClaim
    plan: CachePlan


def store_call(
    new: NewRun,
    settings: Settings,
    wake_channel: str,
    take_routes: str | int | None,
    writes: list[list[Any]],
    admission: Offer | None = None,
    known: Latest | None = None,
) -> dict[str, Any]:
    """The submit script's keys and arguments for ``new`` (``take_routes``: run a dispatch pass after it;
    ``writes``: the RQ writes that enqueue its job, made if that pass takes it; ``admission``: offer it to
    the API key's bucket first; ``known``: check the workflow's latest version is still this one)."""
    run, claim = new.run, new.claim
    encoded: list[Any] = []
    for command in writes:
        encoded += [len(command), *command]
    flat: list[str] = []
    for name, value in run.to_redis().items():
        flat += [name, value]
    return {
        "keys": [
            keys.run(run.id),
            keys.run_graph(run.id),
            keys.backlog(run.tenant, run.priority),
            keys.rotation(run.priority),
            keys.RECENT_RUNS,
            keys.tenant(run.tenant),
            *(keys.backlog(run.tenant, p) for p in PRIORITIES),
            claim.redis_key,
            new.plan.pointer,
            keys.INFLIGHT,
            keys.DELAYED,
            keys.bucket(ADMISSION_KIND, admission.ident if admission is not None else "-"),
            keys.WORKFLOWS,
        ],
        "args": [
            run.id,
            run.tenant,
            repr(run.created_at),
            json.dumps(new.bound.graph),
            settings.max_queued,
            keys.RECENT_RUNS_MAX,
            wake_channel,
            json.dumps({"workflow": run.workflow, "priority": run.priority, "tenant": run.tenant}),
            claim.fingerprint,
            claim.ttl,
            new.plan.pointer_ttl,
            "" if take_routes is None else as_routes(take_routes),
            settings.dispatch_rate,
            settings.max_running,
            index_horizon(settings.run_ttl_seconds),
            settings.queue_name,
            len(encoded),
            *(admission.script_args() if admission is not None else NO_ADMISSION),
            run.workflow,
            entry_text(known) if known is not None else "",
            *encoded,
            *flat,
        ],
    }


def parse_stored(reply: Any) -> tuple[int, str, Taken | None, bool]:
    """The submit script's answer: (code, value): 1 or 0 (queue full) with the limit, or an idempotency code;
    what its dispatch pass took (when it ran one), and whether it enqueued this run's job."""
    if len(reply) == 6:
        return int(reply[0]), str(reply[1]), parse_taken(reply[2], reply[3], reply[5]), bool(int(reply[4]))
    return int(reply[0]), str(reply[1]), None, False
