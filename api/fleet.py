"""The workers as ``/v1/workers`` reports them, read from the registry their heartbeats keep."""

from __future__ import annotations

from redis import Redis

from api.models import WorkerView
from api.views import rfc3339
from dispatcher.fleet import read_workers

# A worker silent for this long is gone for good (scaled down, renamed), not worth listing as offline.
FORGET_AFTER_SECONDS = 3600.0


def list_workers(redis: Redis, *, now: float) -> list[WorkerView]:
    """Every worker seen within :data:`FORGET_AFTER_SECONDS` of ``now``, by name (``redis`` must decode responses)."""
    views = []
    for worker in read_workers(redis, since=now - FORGET_AFTER_SECONDS):
        offline = worker.state == "offline"
        views.append(
            WorkerView(
                name=worker.name,
                comfyui_url=None if offline else worker.comfyui_url or None,
                health="offline" if offline else ("healthy" if worker.comfyui_healthy else "unhealthy"),
                state=worker.state,  # type: ignore[arg-type]
                current_run=worker.current_run or None,
                runs=list(worker.runs),
                slots=worker.slots,
                last_seen=rfc3339(worker.last_seen),
            )
        )
    return views
