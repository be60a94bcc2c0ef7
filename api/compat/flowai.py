"""Compatibility with FlowAI's workflow API: a synchronous run, ``POST /v1/api/workflow/run/{id}``.

The request waits (up to :data:`WAIT_SECONDS`) for the run to end and answers its output URLs.
A run that fails is a 502 problem carrying the run's error; one still going when the wait ends is
a 504 problem naming the run, which goes on and can be followed at ``/v1/runs/{id}``.
FlowAI's clients send their API key as ``X-API-KEY``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from starlette.concurrency import run_in_threadpool

from api import operations
from api.auth import CanSubmit
from api.services import JsonBody, ServicesDep
from api.views import Links
from dispatcher.errors import NotAvailableYet, RunFailed, RunStillGoing
from dispatcher.runs import RunStatus

router = APIRouter(prefix="/v1/api/workflow", tags=["compat: FlowAI"])

WAIT_SECONDS = operations.MAX_WAIT_SECONDS


def install(app: FastAPI) -> None:
    app.include_router(router)


@router.post("/run/{workflow_id}")
async def run_workflow(
    workflow_id: str, request: Request, response: Response, body: JsonBody, svc: ServicesDep, who: CanSubmit
) -> dict[str, Any]:
    """Run a workflow and wait for it: ``{"input": {...}}`` in, ``{"output": [urls], "total_time", "run_id"}`` out.

    ``"stream": true`` (server-sent events) is not available yet: 501, and nothing is queued.
    """
    if body.get("stream"):
        raise NotAvailableYet('streaming is not available yet; send the request without "stream"')
    accepted = await run_in_threadpool(operations.submit, svc, who, workflow_id, body)
    response.headers.update(accepted.headers)
    run = await operations.wait(svc, accepted.run.id, WAIT_SECONDS, who)
    if not run.status.terminal:
        raise RunStillGoing(run.id, WAIT_SECONDS)
    if run.status is not RunStatus.SUCCEEDED:
        raise RunFailed(run.id, run.status.value, run.error)
    links = Links.for_request(request, public_url=svc.settings.public_url, store=svc.store)
    # Time as the caller lived it: queueing included, since FlowAI has no separate queue time.
    finished = run.finished_at if run.finished_at is not None else run.created_at
    return {
        "output": [links.output(run.id, o) for o in run.outputs],
        "total_time": round(max(finished - run.created_at, 0.0), 3),
        "run_id": run.id,
    }
