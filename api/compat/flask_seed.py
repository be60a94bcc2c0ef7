"""Compatibility with the Flask seed (``leoleelxh/comfyui-api``): its ``/api/...`` routes over our runs.

The seed's ``prompt_id`` is our run id. Its clients read ``error`` on failures, so our problems
under ``/api/`` also carry ``"error": detail`` and ``"status_code": n``. Two answers keep the
seed's own shape instead of a problem, because seed clients branch on their string ``status``:
``/api/task_status`` of an unknown id (``"status": "not_found"``, 404) and a failed
``/api/test_comfy`` (``"status": "error"``, 503).

The seed had no auth; its routes take our API key in either header (``X-API-KEY`` or
``Authorization: Bearer``). Runs of other tenants are unknown here too, and ``/api/history``
lists only the key's tenant's runs.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from api import history, operations, problems, submitting
from api.auth import CanRead, CanSubmit
from api.fleet import list_workers
from api.routes.runs import EXAMPLE_IMAGE
from api.services import JsonBody, Services, ServicesDep
from api.submitting import IdempotencyKeyHeader
from api.views import Links
from dispatcher import keys
from dispatcher.errors import OutputNotFound
from dispatcher.outputs import kind_named
from dispatcher.runs import Output, Run, RunStatus

router = APIRouter(prefix="/api", tags=["compat: Flask seed"])
PREFIX = "/api/"


# The run body, read by api.body, documented by hand; its values are the workflow's. Examples name their workflow.
RUN_REQUEST_DOC: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "prompt": {"type": "string", "description": "the text for the workflow's prompt node"},
                        "target_node": {
                            "type": "string",
                            "description": "the id of that node (default: the first text node of the workflow)",
                        },
                    },
                    "additionalProperties": True,
                    "description": 'the simple form {"prompt", "target_node"}, or the advanced form '
                    '{"<node_id>": {"inputs": {...}}}, or both; named parameters go under "params"',
                },
                "examples": {
                    "txt2img": {"summary": "txt2img: the simple form", "value": {"prompt": "a lighthouse at dusk"}},
                    "img2img": {
                        "summary": "img2img: the simple form for the prompt, the advanced one for the input image",
                        "value": {
                            "prompt": "the same scene in watercolor",
                            "target_node": "6",
                            "10": {"inputs": {"image": EXAMPLE_IMAGE}},
                        },
                    },
                },
            }
        },
    }
}
# The seed's own answers that are no problems (see the module docstring).
TASK_NOT_FOUND_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "status": {"const": "not_found"},
        "message": {"type": "string"},
        "error": {"type": "string"},
        "status_code": {"const": 404},
    },
    "required": ["status", "message", "error", "status_code"],
}
TEST_COMFY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "status": {"enum": ["success", "error"]},
        "comfyui_url": {"type": ["string", "null"], "description": "null unless the key has the admin scope"},
        "response": {"type": "object", "description": "the workers (admin key), or how many there are and answer"},
        "error": {"type": "string"},
        "status_code": {"const": 503},
    },
    "required": ["status", "comfyui_url", "response"],
}


def problem_members(status: int, detail: str) -> dict[str, Any]:
    """The seed's error members, added to every problem under ``/api/``."""
    return {"error": detail, "status_code": status}


def install(app: FastAPI) -> None:
    app.include_router(router)
    problems.add_flavor(app, PREFIX, problem_members)


def _links(request: Request, svc: Services) -> Links:
    return Links.for_request(request, public_url=svc.settings.public_url, store=svc.store)


def image(run: Run, output: Output, links: Links) -> dict[str, str]:
    return {
        "url": links.output(run.id, output),
        "filename": output.filename,
        "subfolder": output.subfolder,
        "type": output.type,
    }


# Where outputs other than images go, beside the seed's "images" (which lists pictures only, animated ones too).
SEED_KEYS = {"video": "videos", "audio": "audio", "file": "files", "text": "files"}


def files_by_kind(run: Run, links: Links) -> dict[str, Any]:
    """The seed's ``images`` (image outputs), and the run's other outputs beside it, each key only when the run
    has some: ``videos``, ``audio``, ``files`` (the same dicts as images) and ``text`` (the strings)."""
    listed: dict[str, Any] = {"images": []}
    for output in run.outputs:
        kind = kind_named(output.kind, output.content_type)
        if kind == "image":
            listed["images"].append(image(run, output, links))
        elif kind == "text" and output.text is not None:
            listed.setdefault("text", []).append(output.text)
        else:
            listed.setdefault(SEED_KEYS[kind], []).append(image(run, output, links))
    return listed


def task_status(run: Run, queue_position: int | None, links: Links) -> dict[str, Any]:
    """A run in the seed's task-status shapes (pending, running, completed, error)."""
    if run.status is RunStatus.QUEUED:
        # The seed counts from 1 (ComfyUI's queue index + 1); ours counts from 0.
        position = None if queue_position is None else queue_position + 1
        return {"status": "pending", "message": "Task is waiting in queue", "queue_position": position}
    if run.status is RunStatus.RUNNING:
        return {
            "status": "running",
            "message": "Task is currently running",
            "execution_info": {"progress": run.progress, "node": run.node or None},
        }
    if run.status is RunStatus.SUCCEEDED:
        started = run.started_at if run.started_at is not None else run.created_at
        finished = run.finished_at if run.finished_at is not None else started
        return {
            "status": "completed",
            "message": "Image generation completed",
            **files_by_kind(run, links),
            "execution_time": round(max(finished - started, 0.0), 3),
            "node_errors": {},
        }
    error = run.error or {}
    message = str(error.get("message") or f"Task ended with status {run.status.value}")
    return {"status": "error", "message": message, "node_errors": error.get("node_errors") or {}}


def history_entry(run: Run, links: Links) -> dict[str, Any]:
    """A finished run shaped like an entry of ComfyUI's ``/history`` (which the seed passed through): each node's
    outputs under the UI key ComfyUI listed them by (``images``, ``gifs``, ``audio``, ``3d``; ``text``: the
    strings), each file with its URL."""
    outputs: dict[str, dict[str, list[Any]]] = {}
    for output in run.outputs:
        node = outputs.setdefault(output.node, {})
        if output.text is not None:
            node.setdefault("text", []).append(output.text)
        else:
            node.setdefault(output.ui_key or "images", []).append(image(run, output, links))
    succeeded = run.status is RunStatus.SUCCEEDED
    return {
        "prompt_id": run.id,
        "workflow": run.workflow,
        "outputs": outputs,
        "status": {
            "status_str": "success" if succeeded else "error",
            "completed": succeeded,
            "messages": [] if run.error is None else [["execution_error", run.error]],
        },
    }


@router.get("/workflows")
async def list_workflows(svc: ServicesDep, _: CanRead) -> dict[str, list[str]]:
    """The workflow ids (Flask seed: ``GET /api/workflows``)."""
    return {"workflows": [w.id for w in svc.registry.all()]}


@router.post("/workflow/{name}", openapi_extra=RUN_REQUEST_DOC)
async def run_workflow(
    name: str,
    body: JsonBody,
    response: Response,
    svc: ServicesDep,
    who: CanSubmit,
    idempotency_key: IdempotencyKeyHeader = None,
) -> dict[str, str]:
    """Queue a run (Flask seed: simple ``{"prompt", "target_node"}`` or advanced ``{"<node>": {"inputs"}}`` form).

    ``prompt_id`` is the run id to pass to ``/api/task_status``.
    """
    accepted = await run_in_threadpool(submitting.submit, svc, who, name, body, idempotency_key=idempotency_key)
    response.headers.update(accepted.headers)
    run = accepted.run
    return {"status": "success", "prompt_id": run.id, "client_id": run.client_id}


@router.get(
    "/task_status/{prompt_id}",
    response_model=None,
    responses={
        404: {
            "description": "no such run: the seed's not_found answer (not a problem)",
            "content": {"application/json": {"schema": TASK_NOT_FOUND_SCHEMA}},
        }
    },
)
def get_task_status(prompt_id: str, request: Request, svc: ServicesDep, who: CanRead) -> dict[str, Any] | JSONResponse:
    """A run's state in the seed's shapes: pending, running, completed, error or (404) not_found."""
    run = operations.find_run(svc, prompt_id, who)
    if run is None:
        detail = f"run {prompt_id!r} does not exist"
        body = {"status": "not_found", "message": "Task not found", **problem_members(404, detail)}
        return JSONResponse(body, status_code=404)
    return task_status(run, svc.runs.queue_position(run), _links(request, svc))


@router.get("/history")
def get_all_history(
    request: Request,
    svc: ServicesDep,
    who: CanRead,
    max_items: Annotated[int, Query(ge=1, le=keys.RECENT_RUNS_MAX, description="recent runs to look at")] = 100,
) -> dict[str, Any]:
    """The tenant's recently finished runs, by run id, newest first, like ComfyUI's ``/history``."""
    links = _links(request, svc)
    runs = history.recent_runs(svc.conns.text, max_items, tenant=who.tenant)
    return {run.id: history_entry(run, links) for run in runs if run.status.terminal}


@router.get("/history/{prompt_id}")
def get_history(prompt_id: str, request: Request, svc: ServicesDep, who: CanRead) -> dict[str, Any]:
    """One run's history entry, keyed by its id; ``{}`` while it has not finished (as ComfyUI does)."""
    run = operations.get_run(svc, prompt_id, who)
    if not run.status.terminal:
        return {}
    return {run.id: history_entry(run, _links(request, svc))}


@router.get("/image/{prompt_id}")
def get_image(prompt_id: str, request: Request, svc: ServicesDep, who: CanRead) -> dict[str, Any]:
    """The output files of a succeeded run: ``images``, and its other outputs beside (``videos``, ``audio``,
    ``files``, ``text``); 404 while it has none."""
    run = operations.get_run(svc, prompt_id, who)
    if run.status is not RunStatus.SUCCEEDED or not run.outputs:
        raise OutputNotFound(f"run {run.id} has no images (status: {run.status.value})")
    return {"status": "success", **files_by_kind(run, _links(request, svc))}


@router.get(
    "/test_comfy",
    response_model=None,
    responses={
        200: {"content": {"application/json": {"schema": TEST_COMFY_SCHEMA}}},
        503: {
            "description": 'no worker reports a healthy ComfyUI: the seed\'s "status": "error" answer (not a problem)',
            "content": {"application/json": {"schema": TEST_COMFY_SCHEMA}},
        },
    },
)
def test_comfy(svc: ServicesDep, who: CanRead) -> dict[str, Any] | JSONResponse:
    """Whether any worker reports a healthy ComfyUI; 503 with ``"status": "error"`` when none does.

    Any read key learns that and how many workers answer; only an ``admin`` key sees the workers themselves
    (their ComfyUI addresses and the runs they hold, of every tenant), as ``/v1/workers`` shows them.
    """
    workers = list_workers(svc.conns.text, now=time.time(), capabilities=svc.capabilities)
    healthy = [w for w in workers if w.health == "healthy"]
    admin = "admin" in who.scopes
    body: dict[str, Any] = {
        "status": "success" if healthy else "error",
        "comfyui_url": (healthy[0].comfyui_url if healthy else svc.settings.comfyui_url) if admin else None,
        "response": {"workers": [w.model_dump() for w in workers]}
        if admin
        else {"workers_healthy": len(healthy), "workers_total": len(workers)},
    }
    if healthy:
        return body
    body.update(problem_members(503, "no worker reports a healthy ComfyUI"))
    return JSONResponse(body, status_code=503)
