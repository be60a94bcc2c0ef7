"""``/v1/workflows``: the bundled workflows and the parameters each takes."""

from __future__ import annotations

from fastapi import APIRouter

from api.auth import CanRead
from api.models import WorkflowList, WorkflowView
from api.services import ServicesDep

router = APIRouter(prefix="/v1/workflows", tags=["workflows"])


@router.get("", response_model=WorkflowList)
async def list_workflows(svc: ServicesDep, _: CanRead) -> WorkflowList:
    """List every workflow with its parameters (type, required, default, limits)."""
    return WorkflowList(workflows=[WorkflowView(**w.describe()) for w in svc.registry.all()])


@router.get("/{workflow_id}", response_model=WorkflowView)
async def get_workflow(workflow_id: str, svc: ServicesDep, _: CanRead) -> WorkflowView:
    """Describe one workflow and its parameters; 404 if there is no such workflow."""
    return WorkflowView(**svc.registry.get(workflow_id).describe())
