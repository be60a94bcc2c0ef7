"""What the API does with runs, shared by the native routes and every compatibility adapter.

Submitting, reading, waiting for and viewing a run are implemented once, here; routes only
translate HTTP in and out. Functions that touch Redis are blocking: async routes call them
through a thread pool, never on the event loop.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Annotated, Any

import anyio.to_thread
from fastapi import Query

from api.models import RunView
from api.services import Services
from api.views import Links, run_view
from dispatcher.errors import OutputNotFound, RunNotFound
from dispatcher.runs import Output, Run
from dispatcher.submit import submit_run
from dispatcher.waiting import wait_for_run

log = logging.getLogger(__name__)

MAX_WAIT_SECONDS = 300.0
# Run ids are url-safe tokens (see dispatcher.runs.new_run_id). Anything else is unknown without asking
# Redis: an id like "<id>:graph" would otherwise address another kind of key.
RUN_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

WaitQuery = Annotated[
    float,
    Query(
        ge=0,
        le=MAX_WAIT_SECONDS,
        description="seconds to wait for the run to end before answering (0 to 300); 0 answers at once",
    ),
]


def submit(svc: Services, workflow_id: str, body: Mapping[str, Any]) -> Run:
    """Bind, store and enqueue a run (all or nothing); raises WorkflowNotFound or ParameterError first."""
    return submit_run(svc.conns.raw, svc.queue, svc.registry, svc.settings, workflow_id, body)


def find_run(svc: Services, run_id: str) -> Run | None:
    """The run's current record, or None if there is no such run."""
    return svc.runs.get(run_id) if RUN_ID_RE.match(run_id) else None


def get_run(svc: Services, run_id: str) -> Run:
    """The run's current record; raises RunNotFound."""
    run = find_run(svc, run_id)
    if run is None:
        raise RunNotFound(run_id)
    return run


def find_output(run: Run, filename: str) -> Output:
    """The run's output called ``filename``; raises OutputNotFound."""
    for output in run.outputs:
        if output.filename == filename:
            return output
    raise OutputNotFound(f"run {run.id} has no output {filename!r}")


async def wait(svc: Services, run_id: str, seconds: float) -> Run:
    """The run once it has ended, or as it is after ``seconds``; raises RunNotFound.

    A client that goes away meanwhile changes nothing: the run was stored before the wait began.
    """
    if not RUN_ID_RE.match(run_id):
        raise RunNotFound(run_id)
    run = await anyio.to_thread.run_sync(wait_for_run, svc.conns.text, svc.runs, run_id, seconds, limiter=svc.waiters)
    if run is None:
        raise RunNotFound(run_id)
    return run


def view(svc: Services, run: Run, links: Links) -> RunView:
    """The native view of ``run``, with its place in the queue (a Redis read)."""
    return run_view(run, queue_position=svc.runs.queue_position(run), links=links)


async def view_async(svc: Services, run: Run, links: Links) -> RunView:
    return await anyio.to_thread.run_sync(view, svc, run, links)
