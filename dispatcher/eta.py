"""When a run will likely have ended (``eta_seconds``): from its place in the queue, the workers ready to take it
and what runs of its workflow lately cost on a GPU.

Every run that succeeds moves its workflow's moving average of GPU-seconds (:data:`LUA_NOTE_SECONDS`, in the
script that ends it). With pipelined workers a GPU is never idle while runs wait, so the fleet works through
the queue at ``workers / mean`` runs a second: a run with ``position`` runs before it ends after about
``(position // workers + 1) * mean`` seconds; a running one after what is left of ``mean``. Without a ready
worker or without a run of the workflow yet there is no basis, and the answer is None.
"""

from __future__ import annotations

from dispatcher import keys

# Each success moves the average this much of the way to its own time: the last dozen runs or so count.
WEIGHT = 0.2

LUA_NOTE_SECONDS = f"""
local function note_seconds(run_key)
  local gpu = tonumber(redis.call('HGET', run_key, 'gpu_seconds') or '0')
  if not gpu or gpu <= 0 then return end
  local workflow = redis.call('HGET', run_key, 'workflow')
  local old = tonumber(redis.call('HGET', '{keys.WORKFLOW_SECONDS}', workflow) or '')
  local new = gpu
  if old then new = old + {WEIGHT} * (gpu - old) end
  redis.call('HSET', '{keys.WORKFLOW_SECONDS}', workflow, string.format('%.6f', new))
end
"""
"""Lua ``note_seconds(run_key)``: a run that succeeded moves its workflow's average GPU-seconds."""


def eta_seconds(
    *, position: int | None, workers: int, mean_seconds: float | None, running_for: float | None = None
) -> float | None:
    """Seconds until a run will likely have ended (pure): queued (``position`` runs before it) or running (for
    ``running_for`` seconds); None without a ready worker or without a mean to go by."""
    if mean_seconds is None or mean_seconds <= 0:
        return None
    if running_for is not None:
        return round(max(0.0, mean_seconds - running_for), 3)
    if position is None or workers <= 0:
        return None
    return round((position // workers + 1) * mean_seconds, 3)
