"""The workers as ``/v1/workers`` reports them, read from the registry their heartbeats keep.

Each worker beats into ``keys.WORKERS`` (name -> time) and a hash ``keys.worker(name)`` that
expires unless renewed: a name whose hash is gone belongs to a worker that stopped beating.
"""

from __future__ import annotations

from redis import Redis

from api.models import WorkerView
from api.views import rfc3339
from dispatcher import keys

# A worker silent for this long is gone for good (scaled down, renamed), not worth listing as offline.
FORGET_AFTER_SECONDS = 3600.0


def list_workers(redis: Redis, *, now: float) -> list[WorkerView]:
    """Every worker seen within :data:`FORGET_AFTER_SECONDS` of ``now``, by name (``redis`` must decode responses)."""
    seen: list[tuple[str, float]] = redis.zrangebyscore(  # type: ignore[assignment]
        keys.WORKERS, now - FORGET_AFTER_SECONDS, "+inf", withscores=True
    )
    pipe = redis.pipeline(transaction=False)
    for name, _ in seen:
        pipe.hgetall(keys.worker(name))
    states: list[dict[str, str]] = pipe.execute()
    workers = []
    for (name, beat), state in zip(seen, states, strict=True):
        if not state:
            workers.append(
                WorkerView(name=name, comfyui_url=None, health="offline", current_run=None, last_seen=rfc3339(beat))
            )
            continue
        last_seen = float(state["last_seen"]) if state.get("last_seen") else beat
        workers.append(
            WorkerView(
                name=name,
                comfyui_url=state.get("comfyui_url") or None,
                health="healthy" if state.get("comfyui_healthy") == "1" else "unhealthy",
                current_run=state.get("current_run") or None,
                last_seen=rfc3339(last_seen),
            )
        )
    return sorted(workers, key=lambda w: w.name)
