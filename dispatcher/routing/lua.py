"""Routing in the dispatch script: which workers get a run (Lua), and the RQ queue they take it from.

A *route* is a queue only some workers take runs from, ``<queue>:caps:<route>``:

* with model affinity (``COMFY_DISPATCH_MODEL_AFFINITY``, the default), each worker that published a capability
  set is a route of its own, ``<digest>@<worker>``, so a run can go to the very GPU that has its checkpoint
  loaded;
* without, the workers with the same capability set share the route ``<digest>``.

The dispatch script is told each route's pipeline slots and checkpoint (:func:`encode_routes`); a run taken goes
to a route whose set has everything it needs (its ``needs``: tokens looked up in the set's items,
``keys.capabilities(digest):items``) and has a free slot. Among those it prefers, in order: one whose checkpoint
is the run's (no model to load), one with no checkpoint yet, then any (a switch: the most free slots). A run
that would switch while a worker holding its checkpoint is busy waits for it, at most
``COMFY_DISPATCH_AFFINITY_WAIT_SECONDS`` from its creation; a checkpoint no ready worker holds goes at once.
A route's checkpoint is the one of the last run routed to it (``<ns>:route-checkpoints``), ahead of what the
worker's heartbeat says.

A route's runs in flight are the set ``<ns>:routed:<route>``: the run joins it when taken and leaves it wherever
it leaves flight (``unroute``, in every script that takes a run out of ``keys.INFLIGHT``). Workers that
published no set (their ComfyUI could not be read, or an older worker) form the route ``-``: the shared queue,
taken to run anything, as before routing.
"""

from __future__ import annotations

from collections.abc import Iterable

from dispatcher import keys
from dispatcher.fleet import WorkerInfo
from dispatcher.routing.capabilities import checkpoint_tag

ANY = "-"
"""The route of workers without a published capability set (the shared queue), and 'no checkpoint'."""

ROUTE_CHECKPOINTS = f"{keys.NS}:route-checkpoints"

LUA_UNROUTE = f"""
local function unroute(run_key, run_id)
  local route = redis.call('HGET', run_key, 'routed')
  if route then
    redis.call('SREM', '{keys.NS}:routed:' .. route, run_id)
    redis.call('HDEL', run_key, 'routed')
  end
end
"""
"""Lua ``unroute(run_key, run_id)``: the run leaves flight, and its route's count."""

LUA_ROUTES = f"""
-- routes_of('<affinity wait>|<route> <slots> <checkpoint>,...', now, later): the routes with their free slots,
-- place(run_key): the index of the route the run goes to, its checkpoint and whether the route has it loaded
-- ('hit'), must load it ('switch') or neither is known ('none') (nil when it waits), and room():
-- the free slots in all. later(seconds) is told when a run waits for a worker holding its checkpoint.
local function routes_of(text, now, later)
  local routes = {{}}
  local cover = {{}}
  local wait_text, entries = string.match(text, '^([%d.]*)|(.*)$')
  local affinity_wait = tonumber(wait_text) or 0
  local names = {{}}
  for route, slots, checkpoint in string.gmatch(entries or '', '([^ ,]+) (%d+) ([^ ,]+)') do
    local free = tonumber(slots) - redis.call('SCARD', '{keys.NS}:routed:' .. route)
    routes[#routes + 1] = {{route, free, string.match(route, '^([^@]+)'), checkpoint}}
    names[#names + 1] = route
  end
  if #names > 0 then
    local predicted = redis.call('HMGET', '{ROUTE_CHECKPOINTS}', unpack(names))
    for i, checkpoint in ipairs(predicted) do
      if checkpoint then routes[i][4] = checkpoint end
    end
  end
  -- the indexes of the routes whose set has all of ``needs``, worked out once per distinct needs and pass
  local function capable(needs)
    local known = cover[needs]
    if known ~= nil then return known end
    known = {{}}
    local tokens = {{}}
    for token in string.gmatch(needs, '[^\\n]+') do tokens[#tokens + 1] = token end
    local by_set = {{}}
    for i, route in ipairs(routes) do
      local set = route[3]
      local ok = by_set[set]
      if ok == nil then
        ok = set == '{ANY}' or #tokens == 0
        if not ok then
          ok = true
          local found = redis.call('SMISMEMBER', '{keys.NS}:capabilities:' .. set .. ':items', unpack(tokens))
          for _, member in ipairs(found) do
            if member == 0 then ok = false; break end
          end
        end
        by_set[set] = ok
      end
      if ok then known[#known + 1] = i end
    end
    cover[needs] = known
    return known
  end
  local function place(run_key)
    local run = redis.call('HMGET', run_key, 'needs', 'checkpoint_tag', 'created_at')
    local checkpoint = run[2] or '{ANY}'
    local best, best_rank, held = nil, 4, false
    for _, i in ipairs(capable(run[1] or '')) do
      local route = routes[i]
      if checkpoint ~= '{ANY}' and route[4] == checkpoint then held = true end
      if route[2] > 0 then
        local rank = 3
        if checkpoint == '{ANY}' or route[4] == checkpoint then rank = 1 elseif route[4] == '{ANY}' then rank = 2 end
        if rank < best_rank or (rank == best_rank and route[2] > routes[best][2]) then best, best_rank = i, rank end
      end
    end
    if best ~= nil and best_rank == 3 and held and affinity_wait > 0 then
      local waited = now - tonumber(run[3] or now)
      if waited < affinity_wait then
        later(affinity_wait - waited)
        return nil, checkpoint, 'none'
      end
    end
    local model = 'none'
    if checkpoint ~= '{ANY}' and best_rank == 1 then model = 'hit' elseif best_rank == 3 then model = 'switch' end
    return best, checkpoint, model
  end
  -- a run of ``checkpoint`` went to route i: that is the model its worker will have loaded
  local function took(i, checkpoint)
    routes[i][2] = routes[i][2] - 1
    if checkpoint ~= '{ANY}' and string.find(routes[i][1], '@', 1, true) and routes[i][4] ~= checkpoint then
      routes[i][4] = checkpoint
      redis.call('HSET', '{ROUTE_CHECKPOINTS}', routes[i][1], checkpoint)
    end
  end
  local function room()
    local total = 0
    for _, route in ipairs(routes) do if route[2] > 0 then total = total + route[2] end end
    return total
  end
  return routes, place, took, room
end
"""


def route_of(caps: str, worker: str, *, affinity: bool) -> str:
    """The route of a worker (its name) with the capability set ``caps`` ('' before it published one)."""
    if not caps:
        return ANY
    return f"{caps}@{worker}" if affinity else caps


def encode_routes(workers: Iterable[WorkerInfo], *, affinity: bool = False, affinity_wait: float = 0.0) -> str:
    """The ready workers' slots by route, as the dispatch script reads them."""
    slots: dict[str, int] = {}
    checkpoints: dict[str, str] = {}
    for worker in workers:
        if worker.ready:
            route = route_of(worker.caps, worker.name, affinity=affinity)
            slots[route] = slots.get(route, 0) + worker.slots
            if affinity and route != ANY:
                checkpoints[route] = checkpoint_tag(worker.checkpoint)
    entries = ",".join(f"{route} {count} {checkpoints.get(route, ANY)}" for route, count in sorted(slots.items()))
    return f"{affinity_wait:g}|{entries}" if entries else ""


def route_queue(queue_name: str, route: str) -> str:
    """The RQ queue (its name) of a route."""
    return queue_name if route in (ANY, "") else f"{queue_name}:caps:{route}"


def as_routes(value: int | str) -> str:
    """Routes as given, or a number of slots as the one route of workers without a set (tests, benchmarks)."""
    return value if isinstance(value, str) else f"0|{ANY} {max(value, 0)} {ANY}"
