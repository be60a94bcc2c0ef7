"""Runs: submitting one (``POST /v1/workflows/{id}/runs``) and following it (``GET /v1/runs/{id}``)."""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from api import operations, sse, submitting
from api.auth import CanRead, CanSubmit
from api.models import RunList, RunView
from api.operations import WaitQuery
from api.routes import events
from api.services import JsonBody, Services, ServicesDep
from api.submitting import IdempotencyKeyHeader
from api.views import Links, run_view
from dispatcher import listing, metrics
from dispatcher.binding import NATIVE_OPTION_KEYS
from dispatcher.cancel import CancelResult
from dispatcher.errors import ParameterError, TooManyWaits
from dispatcher.runs import RunStatus, new_run_id
from dispatcher.workflows import parse_version

log = logging.getLogger(__name__)

router = APIRouter(tags=["runs"])

# An input image for examples: a 1x1 PNG as a data: URI (an http(s) URL or upload:<id> would do as well).
VersionQuery = Annotated[
    int | None, Query(ge=1, le=2**31, description="the workflow version to run; default: the latest")
]

EXAMPLE_IMAGE = (
    "data:image/png;base64,"
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
LOCATION_HEADER: dict[str, Any] = {
    "Location": {"description": "the run: /v1/runs/{id}", "required": True, "schema": {"type": "string"}}
}

# We parse the body ourselves (api.body), so FastAPI cannot derive its schema: document it by hand. Its params are
# the workflow's (GET /v1/workflows/{id}); each example is named after the workflow it runs.
RUN_REQUEST_DOC: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "params": {
                            "type": "object",
                            "additionalProperties": True,
                            "description": 'named parameters, or Comflowy "node_id::input" keys',
                        },
                        "priority": {"type": "string", "enum": ["high", "normal", "low"], "default": "normal"},
                        "stream": {
                            "type": "boolean",
                            "default": False,
                            "description": "answer with the run's events (text/event-stream), as /v1/runs/{id}/events",
                        },
                        "cache": {
                            "type": "boolean",
                            "description": "serve an identical run that succeeded within the cache TTL (only if every "
                            "seed is fixed); default: the workflow's manifest",
                        },
                        "version": {
                            "type": "integer",
                            "minimum": 1,
                            "description": "the workflow version to run (as ?version=); default: the latest",
                        },
                    },
                    "additionalProperties": True,
                    "description": 'also accepted: the Flask seed\'s {"prompt", "target_node"} and '
                    '{"<node_id>": {"inputs": {...}}} at top level, and FlowAI\'s "input" in place of "params"',
                },
                "examples": {
                    "txt2img": {
                        "summary": "txt2img: a prompt (required) and a seed",
                        "value": {"params": {"prompt": "a lighthouse at dusk", "seed": 7}, "priority": "high"},
                    },
                    "img2img": {
                        "summary": "img2img: an input image and a prompt (both required)",
                        "value": {"params": {"image": EXAMPLE_IMAGE, "prompt": "the same scene in watercolor"}},
                    },
                },
            }
        },
    }
}


@router.post(
    "/v1/workflows/{workflow_id}/runs",
    status_code=202,
    response_model=RunView,
    openapi_extra=RUN_REQUEST_DOC,
    responses={
        200: {
            "model": RunView,
            "description": 'the run ended within ?wait seconds; or, with "stream": true, its events',
            "content": {sse.MEDIA_TYPE: {}},
            "headers": LOCATION_HEADER,
        },
        202: {"description": "the run is queued (or still running after ?wait seconds)", "headers": LOCATION_HEADER},
    },
)
async def create_run(
    workflow_id: str,
    request: Request,
    response: Response,
    body: JsonBody,
    svc: ServicesDep,
    who: CanSubmit,
    wait: WaitQuery = 0,
    idempotency_key: IdempotencyKeyHeader = None,
    version: VersionQuery = None,
) -> RunView | Response:
    """Queue a run of a workflow: 202 with the queued run and ``Location: /v1/runs/{id}``.

    With ``?wait=SECONDS`` the answer waits for the run to end: 200 with the finished run, or 202
    with the queued or running run when the time is up. Either way the run goes on if the client
    leaves. With ``"stream": true`` in the body the answer is a 200 ``text/event-stream`` of the
    run's events, as ``GET /v1/runs/{id}/events`` gives them. Bad parameters are a 422 naming the
    parameter, and nothing is queued. Over the API key's submission rate, or the tenant's queue
    limit, a 429 with ``Retry-After``; every answer carries the ``RateLimit`` and
    ``RateLimit-Policy`` fields of the key. An ``Idempotency-Key`` sent again with the same body
    answers the first run (``Idempotent-Replayed: true``); with another body, a 409.
    """
    if version is not None:
        if parse_version(body.get("version", version)) != version:
            raise ParameterError("version", "?version= and the body's version differ; give one")
        body = {**body, "version": version}
    # A request that waits watches for its run's end from before the run is stored: no read before it waits.
    drawn = new_run_id() if wait > 0 else None
    with svc.waits.watching(drawn) if drawn is not None else nullcontext(None) as watch:
        accepted = await submitting.submit_async(
            svc, who, workflow_id, body, idempotency_key=idempotency_key, options=NATIVE_OPTION_KEYS, run_id=drawn
        )
        run = accepted.run
        headers = {**accepted.headers, "Location": f"/v1/runs/{run.id}"}
        response.headers.update(headers)
        # The run is stored: whatever happens now, the answer says so (202 with the run as we know it), never an
        # error a client would try again (and so run twice).
        try:
            if submitting.wants_stream(body):
                return events.stream_response(request, svc, run, headers=headers)
            if wait > 0:
                run = await operations.wait_submitted(svc, accepted, watch, wait, who)
            view = await operations.view_async(svc, run, _links(request, svc))
        except TooManyWaits:  # a stream asked for, over the tenant's quota of waiting requests: no stream
            view = await operations.view_async(svc, run, _links(request, svc))
        except Exception:  # the answer to a stored run must not be an error (Redis gone for a moment, say)
            log.warning("run %s stored; answering it as queued after an error", run.id, exc_info=True)
            run = accepted.run
            view = run_view(run, queue_position=None, links=_links(request, svc))
    response.status_code = 200 if run.status.terminal else 202
    return view


@router.get("/v1/runs", response_model=RunList)
async def list_runs(
    request: Request,
    svc: ServicesDep,
    who: CanRead,
    status: Annotated[RunStatus | None, Query(description="only runs in this state")] = None,
    workflow: Annotated[str | None, Query(max_length=200, description="only runs of this workflow")] = None,
    since: Annotated[
        str | None, Query(max_length=64, description="only runs created at or after: RFC 3339 or Unix seconds")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=listing.MAX_LIMIT, description="runs on this page")] = listing.DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(max_length=400, description="next_cursor of the page before")] = None,
) -> RunList:
    """The caller's tenant's runs, newest first, a page at a time (follow ``next_cursor`` until it is null).

    A page with filters looks at a bounded number of runs: it may hold fewer than ``limit`` runs and still
    have a ``next_cursor``. Runs are listed for as long as their records are kept (``COMFY_DISPATCH_RUN_TTL_SECONDS``).
    """
    filters = listing.Filters(
        status=status, workflow=workflow, since=listing.parse_since(since) if since is not None else None
    )
    links = _links(request, svc)

    def page() -> RunList:
        found = listing.list_runs(svc.conns.text, who.tenant, filters=filters, limit=limit, cursor=cursor)
        return RunList(
            runs=[run_view(r, queue_position=None, links=links) for r in found.runs], next_cursor=found.next_cursor
        )

    return await run_in_threadpool(page)


@router.get("/v1/runs/{run_id}", response_model=RunView)
async def get_run(run_id: str, request: Request, svc: ServicesDep, who: CanRead, wait: WaitQuery = 0) -> RunView:
    """A run's status, progress, place in the queue, outputs and error.

    With ``?wait=SECONDS``, answers as soon as the run ends or when the time is up (a long poll).
    """
    if wait > 0:
        run = await operations.wait(svc, run_id, wait, who)
    else:
        run = await operations.get_run_async(svc, run_id, who)
    return await operations.view_async(svc, run, _links(request, svc))


# How long a cancel answer waits for the worker to interrupt ComfyUI and end a running run.
CANCEL_WAIT_SECONDS = 10.0


@router.post(
    "/v1/runs/{run_id}/cancel",
    response_model=RunView,
    responses={202: {"model": RunView, "description": "the run is running; its worker is interrupting it"}},
)
async def cancel_run(run_id: str, request: Request, response: Response, svc: ServicesDep, who: CanSubmit) -> RunView:
    """Cancel a run: a queued one never starts; a running one is interrupted on its ComfyUI.

    200 with the canceled run (a running one is waited for, up to 10 s), 202 if its worker has not
    ended it yet (it will: the status turns ``canceled``), 409 if the run had already succeeded or
    failed. A cancel sent again for a canceled run answers 200 with it, changing nothing.
    """
    run = await operations.get_run_async(svc, run_id, who)
    if await run_in_threadpool(svc.canceller.cancel, run) is CancelResult.CANCELED:
        # It was queued: it ends here (a running one ends in its worker, and is counted there).
        metrics.observe_run_end(run.workflow, "canceled", time.time() - run.created_at)
    run = await operations.wait(svc, run_id, CANCEL_WAIT_SECONDS, who, or_now=True)
    response.status_code = 200 if run.status.terminal else 202
    return await operations.view_async(svc, run, _links(request, svc))


def _links(request: Request, svc: Services) -> Links:
    return Links.for_request(request, public_url=svc.settings.public_url, store=svc.store)
