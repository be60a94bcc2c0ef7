"""``/v1/queues``: how many runs wait, per priority."""

from __future__ import annotations

from fastapi import APIRouter

from api.auth import IsAdmin
from api.models import QueuesView
from api.services import ServicesDep

router = APIRouter(tags=["system"])


@router.get("/v1/queues", response_model=QueuesView)
def queue_depths(svc: ServicesDep, _: IsAdmin) -> QueuesView:
    """Count the queued runs of each priority (high, normal, low) and in all, over every tenant (scope ``admin``)."""
    depths = svc.runs.queue_depths()
    return QueuesView(queues=depths, total=sum(depths.values()))
