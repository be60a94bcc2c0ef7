"""Admission of submissions: one leaky bucket per API key, kept in Redis and updated atomically.

The maths are :func:`dispatcher.ratelimit.decide`, run inside one Lua script so that any number of
API processes share each bucket without a read-modify-write race, and on Redis's clock (``TIME``)
so that their clocks never need to agree. The bucket is a hash ``keys.bucket("submit", key_id)``
holding ``level`` and ``ts`` (when ``level`` was true); it expires a few drain windows after its
last admitted request, when an absent bucket and an empty one are the same thing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from redis import Redis

from dispatcher import keys
from dispatcher.ratelimit import EPSILON, Decision, check_limits, describe

log = logging.getLogger(__name__)

KIND = "submit"
# A bucket untouched this many drain windows is empty anyway: let Redis forget it.
TTL_WINDOWS = 3

# Keep it in step with ratelimit.decide: leak, then admit if the cost fits (with the same slack).
# Numbers go back as strings: Redis would truncate a Lua number to an integer.
LUA_BUCKET = """
-- bucket_offer(bucket, tenant, rate, burst, cost, windows, epsilon, partial): offer ``cost`` to the bucket hash
-- (level, ts); ``tenant`` ('': none): a tenant hash whose submit_rate and submit_burst, where set, replace the
-- rate and burst given (one round trip for the limits and the bucket); ``partial`` '1' takes as much of the cost
-- as fits (a batch: whole units, at least one) rather than all of it or nothing.
-- Answers {allowed 0/1, level, rate, burst, taken}: numbers as strings (Redis would truncate a Lua number).
local function bucket_offer(bucket, tenant, rate, burst, cost, windows, epsilon, partial)
  rate, burst = tonumber(rate), tonumber(burst)
  cost, windows, epsilon = tonumber(cost), tonumber(windows), tonumber(epsilon)
  if tenant ~= '' then
    local limits = redis.call('HMGET', tenant, 'submit_rate', 'submit_burst')
    rate, burst = tonumber(limits[1]) or rate, tonumber(limits[2]) or burst
  end
  -- as ratelimit.drain_window: seconds a full bucket takes to empty, at least 1
  local ttl = windows * math.max(1, math.ceil(burst / rate - epsilon))

  local clock = redis.call('TIME')
  local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000

  local state = redis.call('HMGET', bucket, 'level', 'ts')
  local level = tonumber(state[1]) or 0
  local last = tonumber(state[2]) or now

  -- leak since the last admitted request (a clock gone backwards leaks nothing)
  level = math.max(0, level - math.max(0, now - last) * rate)

  local limits = {string.format('%.17g', rate), string.format('%.17g', burst)}
  if partial == '1' then cost = math.max(1, math.min(cost, math.floor(burst + epsilon - level))) end
  if level + cost > burst + epsilon then
    return {0, string.format('%.17g', level), limits[1], limits[2], '0'}  -- denied: the bucket is left as it was
  end

  level = level + cost
  redis.call('HSET', bucket, 'level', string.format('%.17g', level), 'ts', string.format('%.17g', now))
  redis.call('EXPIRE', bucket, ttl)
  return {1, string.format('%.17g', level), limits[1], limits[2], tostring(cost)}
end
"""
"""The Lua function ``bucket_offer``, for the admission script and for the submit script (which admits a run and
stores it in one step: ``dispatcher.submit``)."""

# KEYS[1]: the bucket; KEYS[2], if given: the tenant hash. ARGV: rate, burst, cost, ttl windows, epsilon, partial.
_BUCKET = (
    LUA_BUCKET + "return bucket_offer(KEYS[1], KEYS[2] or '', ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6])\n"
)


@dataclass(frozen=True)
class Admitted:
    """A decision and the limits it was made with (a tenant's own, or the defaults)."""

    decision: Decision
    rate: float
    burst: float
    taken: int = 0  # units taken from the bucket (the cost when allowed, 0 when denied)


@dataclass(frozen=True)
class Offer:
    """A submission to offer to API key ``ident``'s bucket, inside the script that stores it (``dispatcher.submit``):
    ``rate`` and ``burst`` are the defaults, the tenant's own limits win where it has them."""

    ident: str
    rate: float
    burst: float

    def script_args(self) -> list[Any]:
        """The submit script's admission arguments: rate, burst, ttl windows, epsilon."""
        check_limits(self.rate, self.burst, 1)
        return [self.rate, self.burst, TTL_WINDOWS, EPSILON]


class Admission:
    """Leaky buckets of API keys in Redis; one per process (the script is registered once)."""

    def __init__(self, redis: Redis, *, kind: str = KIND) -> None:
        self.redis = redis
        self.kind = kind
        self._script = redis.register_script(_BUCKET)

    def check(self, ident: str, *, rate: float, burst: float, cost: float = 1) -> Decision:
        """Offer one request of ``cost`` to ``ident``'s bucket (``rate`` per second, holding ``burst``).

        Takes the cost from the bucket when allowed and changes nothing when denied. Raises
        ValueError for limits nothing could pass (``rate <= 0``, ``cost > burst``).
        """
        check_limits(rate, burst, cost)
        return self._offer([keys.bucket(self.kind, ident)], rate=rate, burst=burst, cost=cost).decision

    def check_tenant(self, ident: str, tenant: str, *, rate: float, burst: float, cost: float = 1) -> Admitted:
        """As :meth:`check`, with ``tenant``'s own submit rate and burst where it has them (``rate`` and
        ``burst`` are the defaults): the limits are read in the same script, no round trip of their own."""
        check_limits(rate, burst, cost)
        return self._offer([keys.bucket(self.kind, ident), keys.tenant(tenant)], rate=rate, burst=burst, cost=cost)

    def take_up_to(self, ident: str, tenant: str, count: int, *, rate: float, burst: float) -> tuple[int, Admitted]:
        """As :meth:`check_tenant` for ``count`` submissions at once (a batch): how many of them the bucket
        admits now (0 to ``count``, whole ones), taken from it, and the decision for the last one admitted
        (or, with none admitted, for the first one refused)."""
        check_limits(rate, burst, 1)
        admitted = self._offer(
            [keys.bucket(self.kind, ident), keys.tenant(tenant)], rate=rate, burst=burst, cost=count, partial=True
        )
        return admitted.taken, admitted

    def _offer(
        self, script_keys: list[str], *, rate: float, burst: float, cost: float, partial: bool = False
    ) -> Admitted:
        reply = self._script(keys=script_keys, args=[rate, burst, cost, TTL_WINDOWS, EPSILON, "1" if partial else "0"])
        admitted = parse_offer(reply, cost=cost, partial=partial)
        if not admitted.decision.allowed:
            log.debug("%s bucket of %s full: retry in %.3f s", self.kind, script_keys[0], admitted.decision.retry_after)
        return admitted


def parse_offer(reply: Any, *, cost: float = 1, partial: bool = False) -> Admitted:
    """What ``bucket_offer`` answered (``{allowed, level, rate, burst, taken}``), as an Admitted."""
    allowed, level, used_rate, used_burst, taken = reply
    rate, burst = float(used_rate), float(used_burst)
    cost = float(taken) if partial and int(allowed) else (1 if partial else cost)
    decision = describe(bool(int(allowed)), float(level), rate=rate, burst=burst, cost=cost)
    return Admitted(decision, rate, burst, int(float(taken)))
