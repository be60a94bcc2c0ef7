"""Idempotency keys: the same ``Idempotency-Key`` with the same request gives the first run, never a second.

A client (a batch producer re-sending a whole file after a crash, a retry after a timeout) sends
``Idempotency-Key: <its own token>`` with a run. The key is kept per tenant for
``settings.idempotency_ttl`` seconds as ``<fingerprint>|<run id>``, where the fingerprint is a hash
of the workflow id and the request body. Sent again with the same body, the key answers with the
first run; with a different body it is a conflict (409).

The check and the claim are Lua functions (:data:`LUA_IDEMPOTENCY`) called inside the very script
that stores the run (``dispatcher.submit``, or ``dispatcher.cache`` for a cache hit): Redis runs
one script at a time, so two requests carrying one key at the same instant still make one run.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dispatcher import keys
from dispatcher.errors import Conflict, ParameterError

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
# Visible ASCII only: what fits a structured-field string and a log line without escaping.
KEY_RE = re.compile(rf"[\x21-\x7e]{{1,{MAX_KEY_LENGTH}}}")

"""Seconds a tenant's idempotency key is kept (``settings.idempotency_ttl``)."""

ANSWER_KEYS = frozenset({"stream", "wait"})
"""Body keys that choose how the run is answered, not which run: left out of the fingerprint."""

# Script return codes shared by every script that stores a run (1 and 0 are the scripts' own).
REPLAYED = 2
CONFLICT = 3

NO_KEY = f"{keys.NS}:idempotency:-"
"""Stands in the scripts' KEYS when a request carries no key (its empty fingerprint turns the functions off)."""

LUA_IDEMPOTENCY = f"""
-- idem_seen(key, fingerprint): nil if the key is free, else {{{REPLAYED}, first run}} for the same request
-- and {{{CONFLICT}, first run}} for another. A key naming a run that no longer exists is free again.
local function idem_seen(key, fingerprint)
  if fingerprint == '' then return nil end
  local kept = redis.call('GET', key)
  if not kept then return nil end
  local bar = string.find(kept, '|', 1, true)
  local first = string.sub(kept, bar + 1)
  if redis.call('EXISTS', '{keys.NS}:run:' .. first) == 0 then return nil end
  if string.sub(kept, 1, bar - 1) == fingerprint then return {{{REPLAYED}, first}} end
  return {{{CONFLICT}, first}}
end
local function idem_keep(key, fingerprint, run_id, ttl)
  if fingerprint ~= '' then redis.call('SET', key, fingerprint .. '|' .. run_id, 'EX', ttl) end
end
"""
"""Lua functions ``idem_seen(key, fingerprint)`` and ``idem_keep(key, fingerprint, run_id, ttl)`` to prepend."""


def parse_key(value: str | None) -> str | None:
    """The request's idempotency key, or None without one; ParameterError (422) for a malformed one."""
    if value is None or value == "":
        return None
    if not KEY_RE.fullmatch(value):
        raise ParameterError(HEADER, f"must be 1 to {MAX_KEY_LENGTH} visible ASCII characters (no spaces)")
    return value


def redis_key(tenant: str, key: str) -> str:
    """String ``<fingerprint>|<run id>`` with a TTL: one tenant's idempotency key.

    The client's key is hashed so that any header value makes a key name of fixed length.
    """
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
    return f"{keys.NS}:idempotency:{tenant}:{digest}"


def fingerprint(workflow_id: str, body: Mapping[str, Any]) -> str:
    """A sha256 of the workflow id and the body as canonical JSON: key order and spacing do not count.

    Options that only shape the answer (:data:`ANSWER_KEYS`) do not count either: a client that
    first waited for the JSON and re-sends asking for the event stream asks for the same run.
    """
    request = {name: value for name, value in body.items() if name not in ANSWER_KEYS}
    payload = json.dumps(
        {"workflow_id": workflow_id, "body": request}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class IdempotencyClaim:
    """What a storing script needs to check and keep one request's key; :meth:`none` for a request without."""

    key: str  # the client's own key ('' for none)
    redis_key: str
    fingerprint: str  # '' turns the Lua functions off
    ttl: int

    @classmethod
    def none(cls) -> IdempotencyClaim:
        return cls(key="", redis_key=NO_KEY, fingerprint="", ttl=0)

    @classmethod
    def build(
        cls, key: str | None, *, tenant: str, workflow_id: str, body: Mapping[str, Any], ttl: int
    ) -> IdempotencyClaim:
        if key is None:
            return cls.none()
        return cls(key=key, redis_key=redis_key(tenant, key), fingerprint=fingerprint(workflow_id, body), ttl=ttl)

    def conflict(self, first_run: str) -> Conflict:
        """The error for this key sent again with another body (409, naming the key and its run)."""
        return Conflict(
            f"{HEADER} {self.key!r} was already used with a different request (run {first_run}); "
            "send a new key for a new request"
        )
