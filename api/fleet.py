"""The workers as ``/v1/workers`` reports them, read from the registry their heartbeats keep, and how many can run
a workflow."""

from __future__ import annotations

from redis import Redis

from api.models import WorkerView
from api.views import rfc3339
from dispatcher.fleet import read_workers
from dispatcher.routing.defaults import default_needs
from dispatcher.routing.store import CapabilityStore, FleetCapabilities
from dispatcher.workflows import Workflow

# A worker silent for this long is gone for good (scaled down, renamed), not worth listing as offline.
FORGET_AFTER_SECONDS = 3600.0


def list_workers(redis: Redis, *, now: float, capabilities: CapabilityStore) -> list[WorkerView]:
    """Every worker seen within :data:`FORGET_AFTER_SECONDS` of ``now``, by name (``redis`` must decode responses),
    with what its ComfyUI can run as ``capabilities`` holds it."""
    views = []
    workers = read_workers(redis, since=now - FORGET_AFTER_SECONDS)
    sets = capabilities.get_many(w.caps for w in workers)
    for worker in workers:
        offline = worker.state == "offline"
        caps = sets.get(worker.caps)
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
                capabilities=worker.caps or None,
                models=caps.model_counts() if caps is not None else None,
                nodes=len(caps.nodes) if caps is not None else None,
                checkpoint=worker.checkpoint or None,
                warmup_error=worker.warmup_error or None,
            )
        )
    return views


def capable_workers(workflow: Workflow, fleet: FleetCapabilities) -> int | None:
    """How many ready workers can run ``workflow`` with its parameters' defaults; None when no worker has
    published its capabilities, or when what a run needs depends on a parameter it must be given
    (:func:`~dispatcher.routing.defaults.default_needs`)."""
    if not fleet.sets():
        return None
    needs = default_needs(workflow, fleet.loaders())
    if needs is None:
        return None
    return sum(1 for worker in fleet.capable(needs) if worker.ready)
