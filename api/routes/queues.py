"""``/v1/queues``: how many runs wait, per priority."""

from __future__ import annotations

from fastapi import APIRouter

from api.auth import IsAdmin
from api.models import QueuesView
from api.services import ServicesDep
from dispatcher.routing.waiting import count_unservable

router = APIRouter(tags=["system"])


@router.get("/v1/queues", response_model=QueuesView)
def queue_depths(svc: ServicesDep, _: IsAdmin) -> QueuesView:
    """Count the queued runs of each priority (high, normal, low) and in all, over every tenant (scope ``admin``)."""
    depths = svc.runs.queue_depths()
    fleet = svc.submitter.fleet
    waiting = count_unservable(svc.conns.text, fleet).runs if fleet is not None else 0
    return QueuesView(queues=depths, total=sum(depths.values()), waiting_for_capability=waiting)
