"""Routing in the dispatch script: which capability set's workers get a run (Lua), and its RQ queue.

Workers with the same capability set (the same node classes and model files) share a *route*: the RQ queue
``<queue>:caps:<digest>``, which only they listen to. The dispatch script is told each route's pipeline slots
(the ready workers of the set); a run taken goes to a route whose set has everything it needs (its ``needs``:
tokens looked up in the set's items, ``keys.capabilities(digest):items``) and has a free slot, the one with the
most free slots. A route's runs in flight are the set ``<ns>:routed:<digest>``: the run joins it when taken and
leaves it wherever it leaves flight (``unroute``, in every script that takes a run out of ``keys.INFLIGHT``).

Workers that published no set (their ComfyUI could not be read, or an older worker) form the route ``-``: the
shared queue, taken to run anything, as before routing.
"""

from __future__ import annotations

from collections.abc import Iterable

from dispatcher import keys
from dispatcher.fleet import WorkerInfo

ANY = "-"
"""The route of workers without a published capability set: the shared queue."""

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
-- routes('<digest>:<slots>,...'): the routes with their free slots, and place(run_key): the index of the
-- route the run goes to (a route whose set has all it needs, the most free slots), or nil.
local function routes_of(text)
  local routes = {{}}
  local cover = {{}}
  for digest, slots in string.gmatch(text, '([^:,]+):(%d+)') do
    local free = tonumber(slots) - redis.call('SCARD', '{keys.NS}:routed:' .. digest)
    routes[#routes + 1] = {{digest, free}}
  end
  -- the indexes of the routes whose set has all of ``needs``, worked out once per distinct needs and pass
  local function capable(needs)
    local known = cover[needs]
    if known ~= nil then return known end
    known = {{}}
    local tokens = {{}}
    for token in string.gmatch(needs, '[^\\n]+') do tokens[#tokens + 1] = token end
    for i, route in ipairs(routes) do
      local ok = route[1] == '{ANY}' or #tokens == 0
      if not ok then
        ok = true
        local found = redis.call('SMISMEMBER', '{keys.NS}:capabilities:' .. route[1] .. ':items', unpack(tokens))
        for _, member in ipairs(found) do
          if member == 0 then ok = false; break end
        end
      end
      if ok then known[#known + 1] = i end
    end
    cover[needs] = known
    return known
  end
  local function place(run_key)
    local best = nil
    for _, i in ipairs(capable(redis.call('HGET', run_key, 'needs') or '')) do
      if routes[i][2] > 0 and (best == nil or routes[i][2] > routes[best][2]) then best = i end
    end
    return best
  end
  local function room()
    local total = 0
    for _, route in ipairs(routes) do if route[2] > 0 then total = total + route[2] end end
    return total
  end
  return routes, place, room
end
"""


def encode_routes(workers: Iterable[WorkerInfo]) -> str:
    """The ready workers' slots by route, as the dispatch script reads them (``digest:slots,...``)."""
    slots: dict[str, int] = {}
    for worker in workers:
        if worker.ready:
            route = worker.caps or ANY
            slots[route] = slots.get(route, 0) + worker.slots
    return ",".join(f"{route}:{count}" for route, count in sorted(slots.items()))


def route_queue(queue_name: str, route: str) -> str:
    """The RQ queue (its name) of a route."""
    return queue_name if route in (ANY, "") else f"{queue_name}:caps:{route}"


def as_routes(value: int | str) -> str:
    """Routes as given, or a number of slots as the one route of workers without a set (tests, benchmarks)."""
    return value if isinstance(value, str) else f"{ANY}:{max(value, 0)}"
