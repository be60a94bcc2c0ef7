"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter

from api import problems
from api.models import StatusView
from api.services import ServicesDep

router = APIRouter(tags=["system"])


@router.get("/healthz", response_model=StatusView)
async def healthz() -> StatusView:
    """Liveness: the process answers HTTP. Checks nothing else, so a Redis outage never restarts the API."""
    return StatusView(status="ok")


@router.get(
    "/readyz",
    response_model=StatusView,
    responses={
        503: {
            "description": "Redis does not answer (a problem)",
            "content": {problems.PROBLEM_JSON: {"schema": problems.PROBLEM_SCHEMA}},
            "headers": {"Retry-After": {**problems.RETRY_AFTER, "required": True}},
        }
    },
)
def readyz(svc: ServicesDep) -> StatusView:
    """Readiness: Redis answers PING. A 503 problem otherwise (mapped in api.problems)."""
    svc.conns.text.ping()
    return StatusView(status="ready")
