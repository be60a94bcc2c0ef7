"""Dispatch: choosing which queued runs go to RQ next, atomically, so any number of schedulers may run.

One Lua script takes up to ``free pipeline slots`` runs (the slots of ready workers
minus the runs in flight, see :mod:`worker.pipeline`), each only for workers whose ComfyUI
has what it needs (:mod:`dispatcher.routing.lua`): strict
priority (high, normal, low); within a priority, round-robin between tenants
(the rotation list turns one step per look); a tenant is skipped while at its
``max_running`` or while its dispatch leaky bucket is full. Whatever it takes
leaves the backlog in the same step, so no two schedulers take one run. The
run's dispatch number goes up: its RQ job carries it, and an older job of the
same run is refused at claim (see ``dispatcher.lease``).
"""

from __future__ import annotations

from dataclasses import dataclass

from redis import Redis

from dispatcher import keys
from dispatcher.routing.lua import ANY, LUA_ROUTES, as_routes
from dispatcher.runs import PRIORITIES

LOOK_AHEAD = 4
"""How far into a tenant's backlog a pass looks for a run some ready worker can run, when its head cannot go."""

LUA_WAITING = (
    "local function runs_waiting()\n"
    + "  return "
    + " + ".join(f"redis.call('LLEN', '{keys.rotation(p.value)}')" for p in PRIORITIES)
    + f" + redis.call('ZCARD', '{keys.DELAYED}') > 0\n"
    + "end\n"
)
"""The Lua function ``runs_waiting()``: whether any run waits for a slot (a backlog or a retry's backoff). A run
that ends wakes the scheduler only then: on an idle fleet its wake-up would cost CPU at the moment a client
is being answered, for nothing."""

LUA_TELL_IDLE = """
local function tell_idle(inflight_key, channel)
  if runs_waiting() or redis.call('ZCARD', inflight_key) > 1 then
    redis.call('PUBLISH', channel, 'idle')
    return 1
  end
  return 0
end
"""
"""The Lua function ``tell_idle(INFLIGHT, wake channel)`` (after :data:`LUA_WAITING`): see :func:`tell_idle`. The
script that ends a run calls it too, when the worker holds no other (``dispatcher.lease``): no round trip of
its own then."""

LUA_IDLE = LUA_WAITING + LUA_TELL_IDLE + "return tell_idle(KEYS[1], ARGV[1])\n"


def tell_idle(redis: Redis) -> bool:
    """A worker holds nothing any more: wake the scheduler if that can change something, namely runs wait for a
    slot, or two or more runs are in flight (one may wait behind another on a GPU, to be moved here:
    ``dispatcher.scheduling.rebalance``). Whether it was woken. On an idle fleet each run's end would otherwise
    cost a scheduler pass at the moment its client is being answered."""
    woken = redis.register_script(LUA_IDLE)(keys=[keys.INFLIGHT], args=[keys.SCHEDULER_WAKE])
    return bool(int(woken))  # type: ignore[arg-type]


LUA_TAKE = (
    LUA_WAITING
    + LUA_ROUTES
    + f"local NS = '{keys.NS}'\nlocal LOOK_AHEAD = {LOOK_AHEAD}\n"
    + "local PRIORITIES = {"
    + ", ".join(f"'{p.value}'" for p in PRIORITIES)
    + "}\n"
    + """
-- take(INFLIGHT, DELAYED, routes of the ready workers (dispatcher.routing.lua), default dispatch rate, default
-- max running): {run id, dispatch, priority, timeout, route, model per run taken}, wait (seconds until a blocked
-- backlog may move; -1: none), and whether runs still wait (1) or not (0)
local function take(inflight_key, delayed_key, routes_text, default_rate, default_max_running)
  local ns = NS
  local clock = redis.call('TIME')
  local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
  local taken = {}
  local wait = -1
  local function later(seconds)
    if seconds > 0 and (wait < 0 or seconds < wait) then wait = seconds end
  end
  local routes, place, took, free_room = routes_of(routes_text, now, later)
  local room = free_room()
  -- retries whose backoff ended go back into their backlog at their original place (creation time)
  for _, run_id in ipairs(redis.call('ZRANGEBYSCORE', delayed_key, '-inf', now)) do
    redis.call('ZREM', delayed_key, run_id)
    local run = redis.call('HMGET', ns .. ':run:' .. run_id, 'tenant', 'priority', 'created_at', 'status')
    if run[4] == 'queued' then
      local backlog = ns .. ':backlog:' .. run[1] .. ':' .. run[2]
      local rotation = ns .. ':rr:' .. run[2]
      if redis.call('ZCARD', backlog) == 0 then
        redis.call('LREM', rotation, 0, run[1])
        redis.call('RPUSH', rotation, run[1])
      end
      redis.call('ZADD', backlog, run[3], run_id)
    end
  end
  local next_retry = redis.call('ZRANGE', delayed_key, 0, 0, 'WITHSCORES')
  if #next_retry > 0 then later(tonumber(next_retry[2]) - now) end
  for _, priority in ipairs(PRIORITIES) do
    local blocked = {}
    local rotation = ns .. ':rr:' .. priority
    local tenants = redis.call('LLEN', rotation)
    local misses = 0
    while room > 0 and tenants > 0 and misses < tenants do
      local tenant = redis.call('LMOVE', rotation, rotation, 'LEFT', 'RIGHT')
      local backlog = ns .. ':backlog:' .. tenant .. ':' .. priority
      local head = {}
      if not blocked[tenant] then head = redis.call('ZRANGE', backlog, 0, 0, 'WITHSCORES') end
      if blocked[tenant] then
        misses = misses + 1  -- none of its next runs fits a free slot (slots only go down during a pass)
      elseif #head == 0 then
        redis.call('LREM', rotation, 0, tenant)
        tenants = tenants - 1
      else
        local ok = true
        local limits = redis.call('HMGET', ns .. ':tenant:' .. tenant, 'dispatch_rate', 'max_running')
        local rate = tonumber(limits[1] or default_rate)
        local max_running = tonumber(limits[2] or default_max_running)
        local inflight = ns .. ':tenant:' .. tenant .. ':inflight'
        if ok and max_running > 0 and redis.call('SCARD', inflight) >= max_running then ok = false end
        local bucket, level = nil, 0
        if ok and rate > 0 then
          -- leaky bucket: drains at `rate` per second, holds one second's worth (at least one run)
          bucket = ns .. ':bucket:dispatch:' .. tenant
          local state = redis.call('HMGET', bucket, 'level', 'ts')
          level = math.max(0, tonumber(state[1] or '0') - math.max(0, now - tonumber(state[2] or now)) * rate)
          local burst = math.max(1, rate)
          if level + 1 > burst then ok = false; later((level + 1 - burst) / rate) end
        end
        -- the first of the tenant's next LOOK_AHEAD runs that a route with a free slot can run goes (the head,
        -- unless it waits for workers that can run it: then it does not hold back the runs behind it)
        -- (route slots only go down during a pass: a tenant none of whose runs fit is not looked at again)
        local route, run_id, checkpoint, model = nil, nil, nil, nil
        if ok then
          route, checkpoint, model = place(ns .. ':run:' .. head[1])
          if route ~= nil then
            run_id = head[1]
          else
            for _, candidate in ipairs(redis.call('ZRANGE', backlog, 1, LOOK_AHEAD - 1)) do
              route, checkpoint, model = place(ns .. ':run:' .. candidate)
              if route ~= nil then run_id = candidate; break end
            end
          end
          if route == nil then ok = false; blocked[tenant] = true end
        end
        if ok then
          local run = ns .. ':run:' .. run_id
          local digest = routes[route][1]
          took(route, checkpoint)
          redis.call('SADD', ns .. ':routed:' .. digest, run_id)
          redis.call('HSET', run, 'routed', digest)
          redis.call('ZREM', backlog, run_id)
          local dispatch = redis.call('HINCRBY', run, 'dispatches', 1)
          redis.call('HSET', run, 'dispatched_at', string.format('%.6f', now))
          redis.call('ZADD', inflight_key, string.format('%.6f', now), run_id)
          redis.call('SADD', inflight, run_id)
          redis.call('ZREM', delayed_key, run_id)
          if bucket then
            redis.call('HSET', bucket, 'level', string.format('%.9f', level + 1), 'ts', string.format('%.6f', now))
            redis.call('EXPIRE', bucket, 3600)
          end
          taken[#taken + 1] = run_id
          taken[#taken + 1] = tostring(dispatch)
          taken[#taken + 1] = priority
          taken[#taken + 1] = redis.call('HGET', run, 'timeout') or ''
          taken[#taken + 1] = digest
          taken[#taken + 1] = model

          room = room - 1
          misses = 0
          if redis.call('ZCARD', backlog) == 0 then
            redis.call('LREM', rotation, 0, tenant)
            tenants = tenants - 1
          end
        else
          misses = misses + 1
        end
      end
    end
  end
  return taken, wait, runs_waiting() and 1 or 0
end
"""
)
"""The Lua function ``take``, shared by the dispatch script and the API's submit-and-take (dispatcher.submit)."""

_TAKE = (
    LUA_TAKE
    + """
-- KEYS: INFLIGHT, DELAYED. ARGV: routes of the ready workers, default dispatch rate, default max running.
local taken, wait, waiting = take(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3])
return {taken, tostring(wait), waiting}
"""
)


@dataclass(frozen=True)
class Dispatched:
    run_id: str
    dispatch: int  # the run's dispatch number: its RQ job carries it
    priority: str
    timeout: float | None  # the run's own time limit, if recorded
    route: str = ANY  # the capability set whose workers' queue it goes to (dispatcher.routing.lua)
    model: str = "none"  # its worker has its checkpoint loaded ('hit'), must load it ('switch'), or neither known


@dataclass(frozen=True)
class Taken:
    runs: list[Dispatched]  # in dispatch order
    wait: float | None  # seconds until a blocked backlog may move by itself (backoff ends, bucket drains)
    waiting: bool = True  # runs still wait in a backlog (or a backoff) after this pass


class Dispatcher:
    def __init__(self, redis: Redis, *, dispatch_rate: float, max_running: int) -> None:
        self.redis = redis
        self.dispatch_rate = dispatch_rate
        self.max_running = max_running
        self._take = redis.register_script(_TAKE)

    def take(self, routes: str | int) -> Taken:
        """Take the runs that go to RQ now, given the slots of the ready workers by route
        (:func:`dispatcher.routing.lua.encode_routes`; a number: slots of workers without a capability set)."""
        args: list[str | float | int] = [as_routes(routes), self.dispatch_rate, self.max_running]
        raw = self._take(keys=[keys.INFLIGHT, keys.DELAYED], args=args)
        return parse_taken(raw[0], raw[1], raw[2])


def parse_taken(taken: list[bytes | str], wait: bytes | str, waiting: int | str = 1) -> Taken:
    """What ``take`` returned (the dispatch script's, or the submit script's answer)."""
    flat = [_s(v) for v in taken]
    seconds = float(_s(wait))
    runs = [
        Dispatched(
            flat[i],
            int(flat[i + 1]),
            flat[i + 2],
            float(flat[i + 3]) if flat[i + 3] else None,
            flat[i + 4],
            flat[i + 5],
        )
        for i in range(0, len(flat), 6)
    ]
    return Taken(runs, seconds if seconds >= 0 else None, bool(int(waiting)))


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
