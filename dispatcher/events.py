"""A run's life as a stream of events, written by the same Lua scripts that change the run.

Every state change appends to the run's stream (``keys.run_events``) in the
same script that makes it, so the stream can never disagree with the record:
``queued``, ``started``, ``progress``, ``output`` (one per stored file),
``retrying``, and one terminal event: ``done`` (succeeded), ``error``
(failed) or ``canceled``. Streams are capped (``MAXLEN ~``) and expire with
the run record. Runs that carry callbacks also get each event id appended to
``keys.WEBHOOK_EVENTS`` for the webhook sender.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dispatcher import keys
from dispatcher.batches import LUA_BATCH

STREAM_MAXLEN = 1000
WEBHOOK_STREAM_MAXLEN = 100_000
TERMINAL_EVENTS = frozenset({"done", "error", "canceled"})

LUA_EMIT = (
    LUA_BATCH
    + f"""
local function emit(run_id, kind, data)
  if type(data) ~= 'string' then data = cjson.encode(data) end
  local stream = '{keys.NS}:run:' .. run_id .. ':events'
  local id = redis.call('XADD', stream, 'MAXLEN', '~', {STREAM_MAXLEN}, '*', 'type', kind, 'data', data)
  if redis.call('HEXISTS', '{keys.NS}:run:' .. run_id, 'callbacks') == 1 then
    redis.call('XADD', '{keys.WEBHOOK_EVENTS}', 'MAXLEN', '~', {WEBHOOK_STREAM_MAXLEN}, '*',
               'run', run_id, 'event', id, 'type', kind)
  end
  return id
end
local function seal(run_id, ttl)
  redis.call('EXPIRE', '{keys.NS}:run:' .. run_id .. ':events', ttl)
end
local function announce(run_id, channel, status)
  local flat = redis.call('HGETALL', '{keys.NS}:run:' .. run_id)
  local record = {{}}
  for i = 1, #flat, 2 do record[flat[i]] = flat[i + 1] end
  redis.call('PUBLISH', channel, cjson.encode({{status = status, run = record}}))
  batch_end(record['batch'])  -- every script that ends a run announces it, once: its batch counts it here
end
"""
)
"""Lua functions ``emit(run_id, type, data)``, ``seal(run_id, ttl)`` and ``announce(run_id, done channel, status)``
(and :data:`dispatcher.batches.LUA_BATCH`'s) to prepend to a script. ``announce`` publishes a run's end with its
whole record (``dispatcher.waiting.parse_done`` reads it), so a waiter has the run without reading it again."""


@dataclass(frozen=True)
class Event:
    id: str  # the stream entry id: what SSE sends as its event id, and Last-Event-ID resumes from
    type: str
    data: dict[str, Any]

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_EVENTS
