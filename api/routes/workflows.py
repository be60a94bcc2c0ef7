"""``/v1/workflows``: the bundled workflows and the parameters each takes."""

from __future__ import annotations

from fastapi import APIRouter

from api.auth import CanRead
from api.fleet import capable_workers
from api.models import WorkflowDetailView, WorkflowList, WorkflowView
from api.services import ServicesDep
from dispatcher.routing.store import FleetCapabilities

router = APIRouter(prefix="/v1/workflows", tags=["workflows"])


@router.get("", response_model=WorkflowList)
async def list_workflows(svc: ServicesDep, _: CanRead) -> WorkflowList:
    """List every workflow with its parameters (type, required, default, limits)."""
    return WorkflowList(workflows=[WorkflowView(**w.describe()) for w in svc.registry.all()])


@router.get("/{workflow_id}", response_model=WorkflowDetailView)
def get_workflow(workflow_id: str, svc: ServicesDep, _: CanRead) -> WorkflowDetailView:
    """Describe one workflow, its parameters and how many ready workers can run it; 404 if there is no such
    workflow."""
    workflow = svc.registry.get(workflow_id)
    fleet = FleetCapabilities(svc.capabilities, svc.handout.workers)  # sync def: this reads Redis
    return WorkflowDetailView(**workflow.describe(), capable_workers=capable_workers(workflow, fleet))
