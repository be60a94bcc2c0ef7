"""``GET /v1/runs/{id}/deliveries``: every attempt to deliver the run's callbacks (webhooks)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from api import operations
from api.auth import CanRead
from api.services import Services, ServicesDep
from api.views import rfc3339
from dispatcher.apikeys import Principal
from dispatcher.webhooks.deliveries import Attempt, DeliveryLog

router = APIRouter(tags=["runs"])


class DeliveryView(BaseModel):
    webhook_id: str = Field(description="the webhook-id header: the same on every attempt of one message")
    event: str = Field(description="the run event delivered: queued, started, progress, output, retrying, done...")
    url: str
    attempt: int = Field(description="1 for the first attempt of this message")
    at: str = Field(description="when the attempt began, RFC 3339, UTC")
    status_code: int | None = Field(description="the receiver's answer; null when none came (refused, timeout)")
    error: str | None
    outcome: Literal["delivered", "retrying", "gave_up"]
    next_at: str | None = Field(description="when the next attempt is due (outcome retrying), RFC 3339, UTC")


class DeliveriesView(BaseModel):
    deliveries: list[DeliveryView] = Field(description="oldest first (the newest 500 are kept)")


def _view(attempt: Attempt) -> DeliveryView:
    return DeliveryView(
        webhook_id=attempt.webhook_id,
        event=attempt.event,
        url=attempt.url,
        attempt=attempt.attempt,
        at=rfc3339(attempt.at),
        status_code=attempt.status_code,
        error=attempt.error,
        outcome=attempt.outcome.value,
        next_at=rfc3339(attempt.next_at),
    )


def _deliveries(svc: Services, run_id: str, who: Principal) -> DeliveriesView:
    run = operations.get_run(svc, run_id, who)  # another tenant's run: 404
    attempts = DeliveryLog(svc.conns.text, keep_seconds=svc.settings.run_ttl_seconds).attempts(run.id)
    return DeliveriesView(deliveries=[_view(a) for a in attempts])


@router.get("/v1/runs/{run_id}/deliveries", response_model=DeliveriesView)
async def run_deliveries(run_id: str, svc: ServicesDep, who: CanRead) -> DeliveriesView:
    """Every attempt to deliver the run's callbacks, oldest first: its webhook-id, event, URL, answer and outcome."""
    return await run_in_threadpool(_deliveries, svc, run_id, who)
