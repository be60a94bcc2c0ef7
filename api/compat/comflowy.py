"""Compatibility with Comflowy's open API (``/api/open/v0``): run, check, auth token.

Run statuses map to Comflowy's as follows:

================================  =========
ours                              Comflowy
================================  =========
queued (also between attempts)    waiting
running, no node executing yet    pending   (a worker took it; ComfyUI has not started a node)
running, a node executing         running
succeeded                         success
failed, canceled                  failed
================================  =========

Comflowy lists images only (``output_images``, and ``full_outputs[node].images``): those hold the image outputs
(animated WEBP/PNG/GIF too); a node's other outputs go beside its ``images``, as ``videos``, ``audio``, ``files``
(URLs) and ``text`` (the strings, as ComfyUI shows them): :func:`dispatcher.webhooks.payloads.comflowy_outputs`,
the same for the ``on_result_url`` callback.

Problems under ``/api/open/v0`` carry ``"success": false`` like Comflowy's own answers.
``callback_urls`` are delivered by the webhook sender (`dispatcher.webhooks`), signed per tenant.

Auth as Comflowy does it: ``/auth/token?ppt=<API key>`` checks the key and hands back an access
token (:mod:`dispatcher.tokens`: opaque, good for ``COMFY_DISPATCH_ACCESS_TOKEN_SECONDS``, kept only
hashed, dead with its key); ``/run`` and ``/check`` then take ``Authorization: Bearer <token>``, as
every route does (or the key itself, as ``X-API-KEY`` or bearer).
"""

from __future__ import annotations

import logging
import secrets
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from api import operations, problems, submitting
from api.auth import CanRead, CanSubmit
from api.body import read_json_object
from api.routes.runs import EXAMPLE_IMAGE
from api.services import JsonBody, ServicesDep
from api.submitting import IdempotencyKeyHeader
from api.views import Links
from dispatcher.errors import ParameterError, Unauthorized
from dispatcher.runs import Run, RunStatus
from dispatcher.webhooks.payloads import comflowy_outputs

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/open/v0", tags=["compat: Comflowy"])
PREFIX = "/api/open/v0/"


# The bodies (read by api.body) and the check's id, documented by hand (see check).
RUN_REQUEST_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "workflow_id": {"type": "string", "minLength": 1},
                        "params": {
                            "type": "object",
                            "additionalProperties": True,
                            "description": 'the workflow\'s named parameters, or "node_id::input" keys',
                        },
                    },
                    "required": ["workflow_id"],
                    "additionalProperties": True,
                    "description": 'also taken: "callback_urls" {"on_result_url", "on_progress_event_url"}, signed '
                    "webhooks of the run",
                },
                "examples": {
                    "txt2img": {
                        "summary": "txt2img: a node input and a named parameter",
                        "value": {"workflow_id": "txt2img", "params": {"6::text": "a lighthouse at dusk", "seed": 7}},
                    },
                    "img2img": {
                        "summary": "img2img: an input image and a prompt (both required)",
                        "value": {"workflow_id": "img2img", "params": {"image": EXAMPLE_IMAGE, "prompt": "watercolor"}},
                    },
                },
            }
        },
    }
}
_RUN_ID = {"type": "string", "minLength": 1}
_CHECK_ID = {"name": "id", "in": "query", "description": "the run id that /run returned", "schema": _RUN_ID}
CHECK_GET_DOC: dict[str, Any] = {"parameters": [{**_CHECK_ID, "required": True}]}
CHECK_POST_DOC: dict[str, Any] = {
    "parameters": [{**_CHECK_ID, "required": False, "description": "the run id, or else in the body"}],
    "requestBody": {
        "required": False,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"id": _RUN_ID},
                    "description": "the run id, or else in ?id",
                },
            }
        },
    },
}


def problem_members(status: int, detail: str) -> dict[str, Any]:
    return {"success": False}


def install(app: FastAPI) -> None:
    app.include_router(router)
    problems.add_flavor(app, PREFIX, problem_members)


def comflowy_status(run: Run) -> str:
    """Our run status in Comflowy's words (see the module docstring)."""
    if run.status is RunStatus.QUEUED:
        return "waiting"
    if run.status is RunStatus.RUNNING:
        return "running" if run.node or run.progress > 0 else "pending"
    if run.status is RunStatus.SUCCEEDED:
        return "success"
    return "failed"


def check_data(run: Run, links: Links) -> dict[str, Any]:
    """The ``data`` of Comflowy's check answer: status, error, image URLs overall, and every output per node
    (images under ``images``; videos, audio, files and texts beside them: :func:`comflowy_outputs`)."""
    status = comflowy_status(run)
    data: dict[str, Any] = {"status": status, "output_images": [], "full_outputs": {}}
    if status == "failed":
        data["error"] = str((run.error or {}).get("message") or f"run {run.status.value}")
    if status == "success":
        data["output_images"], data["full_outputs"] = comflowy_outputs(run.outputs, lambda o: links.output(run.id, o))
    return data


@router.post("/run", openapi_extra=RUN_REQUEST_DOC)
async def run(
    body: JsonBody,
    response: Response,
    svc: ServicesDep,
    who: CanSubmit,
    idempotency_key: IdempotencyKeyHeader = None,
) -> dict[str, Any]:
    """Queue a run: ``{"workflow_id", "params": {"name" or "node_id::input": value}, "callback_urls"?}``."""
    workflow_id = body.get("workflow_id")
    if not isinstance(workflow_id, str) or not workflow_id:
        raise ParameterError("workflow_id", "is required (a workflow id string)")
    accepted = await run_in_threadpool(submitting.submit, svc, who, workflow_id, body, idempotency_key=idempotency_key)
    response.headers.update(accepted.headers)
    return {"success": True, "data": {"run_id": accepted.run.id}}


# One function, two routes, so the document tells them apart by hand: a GET needs ?id, a POST takes it or a body.
@router.get("/check", operation_id="comflowy_check_get", openapi_extra=CHECK_GET_DOC)
@router.post("/check", operation_id="comflowy_check_post", openapi_extra=CHECK_POST_DOC)
async def check(
    request: Request,
    svc: ServicesDep,
    who: CanRead,
    run_id: Annotated[str | None, Query(alias="id", include_in_schema=False)] = None,
) -> dict[str, Any]:
    """A run's status and output URLs in Comflowy's shape (``?id=RUN_ID``, GET or POST)."""
    if run_id is None and request.method == "POST":
        body = await read_json_object(request, svc.settings.max_body_bytes)
        run_id = body.get("id") or body.get("run_id")
    if not isinstance(run_id, str) or not run_id:
        raise ParameterError("id", "is required (the run_id that /run returned)")
    found = await operations.get_run_async(svc, run_id, who)
    links = Links.for_request(request, public_url=svc.settings.public_url, store=svc.store)
    return {"success": True, "data": check_data(found, links)}


@router.get("/auth/token")
def auth_token(
    svc: ServicesDep, ppt: Annotated[str, Query(min_length=1, description="your API key")]
) -> dict[str, str | int]:
    """Exchange an API key for an access token to send as ``Authorization: Bearer``: opaque, good for
    ``expires_in`` seconds, and revoked with the key. An unknown or revoked key is a 401."""
    seconds = svc.settings.access_token_seconds
    if svc.settings.auth == "disabled":
        token = f"cdt_anonymous_{secrets.token_urlsafe(16)}"  # nothing to check: every request is let in
    else:
        who = svc.apikeys.authenticate(ppt.strip())
        if who is None:
            raise Unauthorized("the API key is unknown or revoked")
        token, _ = svc.tokens.mint(who, seconds)
    return {"access_token": token, "token_type": "Bearer", "expires_in": seconds}
