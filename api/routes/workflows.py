"""``/v1/workflows``: the workflows, the parameters each takes, and their published versions.

``PUT /v1/workflows/{id}`` (admin) publishes a graph, with its manifest or with one inferred, as a new immutable
version; every API replica uses it for the next run at once (:mod:`dispatcher.workflows.registry`). A graph
saved from ComfyUI's editor (UI format) is converted with the node definitions the workers' ComfyUIs published.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from api.auth import CanRead, IsAdmin
from api.body import parse_object, read_body
from api.fleet import capable_workers
from api.models import WorkflowDetailView, WorkflowList, WorkflowVersionsView, WorkflowVersionView, WorkflowView
from api.services import Services, ServicesDep
from api.views import rfc3339
from dispatcher.errors import BadRequest
from dispatcher.routing.store import FleetCapabilities
from dispatcher.workflows import Workflow
from dispatcher.workflows.publish import unwrap_publication

router = APIRouter(prefix="/v1/workflows", tags=["workflows"])

VersionQuery = Annotated[int | None, Query(ge=1, le=2**31, description="a version; default: the latest")]

PUBLISH_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "graph": {
                            "type": "object",
                            "description": "the ComfyUI graph: API format, or as saved from ComfyUI's editor (UI "
                            "format, converted with the node definitions of the workers' ComfyUIs)",
                        },
                        "manifest": {
                            "type": ["object", "null"],
                            "description": "which inputs runs may set (see the bundled workflows' manifest.json); "
                            "without one it is inferred from the graph",
                        },
                    },
                    "required": ["graph"],
                    "description": "a bare graph (without the graph/manifest wrapper) is taken too",
                },
            }
        },
    }
}


@router.get("", response_model=WorkflowList)
def list_workflows(svc: ServicesDep, _: CanRead) -> WorkflowList:
    """List every workflow (its latest version) with its parameters (type, required, default, limits)."""
    return WorkflowList(workflows=[_view(w) for w in svc.registry.all()])  # sync def: this reads Redis


@router.get("/{workflow_id}", response_model=WorkflowDetailView)
def get_workflow(workflow_id: str, svc: ServicesDep, _: CanRead, version: VersionQuery = None) -> WorkflowDetailView:
    """Describe a workflow's latest version (or ``?version=``): its parameters, manifest and graph, and how many
    ready workers can run it; 404 if there is no such workflow or version, 410 if it was retired."""
    workflow = svc.registry.get(workflow_id, version)
    return _detail(svc, workflow)


@router.get("/{workflow_id}/versions", response_model=WorkflowVersionsView)
def list_versions(workflow_id: str, svc: ServicesDep, _: CanRead) -> WorkflowVersionsView:
    """Every version of a workflow, oldest first, and which one runs use; 404 if there is no such workflow."""
    latest, versions = svc.registry.versions(workflow_id)
    return WorkflowVersionsView(
        id=workflow_id,
        latest=abs(latest),
        retired=latest < 0,
        versions=[WorkflowVersionView(**v.describe() | {"created_at": rfc3339(v.created_at)}) for v in versions],
    )


@router.put(
    "/{workflow_id}",
    response_model=WorkflowDetailView,
    status_code=201,
    openapi_extra=PUBLISH_DOC,
    responses={
        200: {"model": WorkflowDetailView, "description": "the latest version has this graph and manifest already"},
        201: {"description": "published as a new version"},
    },
)
async def publish_workflow(
    workflow_id: str, request: Request, response: Response, svc: ServicesDep, who: IsAdmin
) -> WorkflowDetailView:
    """Publish a graph, with its manifest or with one inferred, as the workflow's new latest version (201); runs
    through every API replica use it from now on, runs queued before keep the version they were bound to. The
    same graph and manifest as the latest version publish nothing (200). An invalid graph or manifest is a 422
    naming what is wrong; a UI-format graph with no worker to read node definitions from, a 422 saying how to
    export the API format."""
    raw = await read_body(request, svc.settings.max_body_bytes)
    body = parse_object(raw)
    if not body:
        raise BadRequest('the body must be {"graph": {...}, "manifest": {...}} or a ComfyUI graph')
    fleet = FleetCapabilities(svc.capabilities, svc.handout.workers)
    workflow = await run_in_threadpool(unwrap_publication, workflow_id, raw, fleet.node_definitions)
    published, done = await run_in_threadpool(svc.registry.publish, workflow, by=who.key_id)
    response.status_code = 201 if done.created else 200
    response.headers["Location"] = f"/v1/workflows/{workflow_id}"
    return await run_in_threadpool(_detail, svc, published)


@router.delete("/{workflow_id}", status_code=204, responses={204: {"description": "retired"}})
def retire_workflow(workflow_id: str, svc: ServicesDep, _: IsAdmin) -> Response:
    """Retire a workflow: new runs of it are refused (410), runs already queued still run; publishing it again
    brings it back. 404 if there is no such workflow."""
    svc.registry.retire(workflow_id)
    return Response(status_code=204)


def _view(workflow: Workflow) -> WorkflowView:
    return WorkflowView(**workflow.describe(), inferred=workflow.inferred)


def _detail(svc: Services, workflow: Workflow) -> WorkflowDetailView:
    fleet = FleetCapabilities(svc.capabilities, svc.handout.workers)  # sync: this reads Redis
    known = svc.registry.store.version(workflow.id, workflow.version)
    return WorkflowDetailView(
        **workflow.describe(),
        inferred=workflow.inferred,
        created_at=rfc3339(known.created_at) if known is not None else None,
        source=known.source if known is not None else None,
        manifest=workflow.manifest,
        graph=workflow.graph,
        capable_workers=capable_workers(workflow, fleet),
    )
