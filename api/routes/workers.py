"""``/v1/workers``: the workers, their ComfyUI's health, what each can run and what it is running."""

from __future__ import annotations

import time

from fastapi import APIRouter

from api.auth import IsAdmin
from api.fleet import list_workers
from api.models import WorkersView
from api.services import ServicesDep

router = APIRouter(tags=["system"])


@router.get("/v1/workers", response_model=WorkersView)
def workers(svc: ServicesDep, _: IsAdmin) -> WorkersView:
    """List the workers seen in the last hour (scope ``admin``).

    ``health`` is ``healthy`` or ``unhealthy`` as the worker last found its ComfyUI, and ``offline``
    once the worker stopped sending heartbeats. ``capabilities``, ``models`` and ``nodes`` say what its ComfyUI
    can run (read at its start, when its ComfyUI comes back, and every few minutes); ``checkpoint`` the model
    its ComfyUI last loaded.
    """
    return WorkersView(workers=list_workers(svc.conns.text, now=time.time(), capabilities=svc.capabilities))
