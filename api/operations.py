"""What the API does with runs, shared by the native routes and every compatibility adapter.

Reading, waiting for and viewing a run are implemented once, here (submitting one: :mod:`api.submitting`);
routes only translate HTTP in and out. Functions that touch Redis are blocking: async routes call them
through a thread pool, never on the event loop.

Every read takes the asking principal: a run of another tenant is unknown (RunNotFound, 404),
exactly as if it did not exist, so nobody learns which run ids are taken.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Annotated

import anyio.to_thread
from fastapi import Query

from api.models import MissingView, RunView
from api.services import Services
from api.submitting import Accepted
from api.views import Links, run_view
from api.waits import Watch
from dispatcher import keys
from dispatcher.apikeys import Principal
from dispatcher.errors import OutputNotFound, RunNotFound, TooManyWaits
from dispatcher.eta import eta_seconds
from dispatcher.routing.capabilities import Needs
from dispatcher.runs import Output, Run, RunStatus, run_of
from dispatcher.waiting import parse_done

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


def find_run(svc: Services, run_id: str, who: Principal) -> Run | None:
    """The run's current record, or None if there is no such run (or it is another tenant's)."""
    run = svc.runs.get(run_id) if RUN_ID_RE.match(run_id) else None
    return run if run is not None and run.tenant == who.tenant else None


def get_run(svc: Services, run_id: str, who: Principal) -> Run:
    """The run's current record; raises RunNotFound (also for a run of another tenant)."""
    run = find_run(svc, run_id, who)
    if run is None:
        raise RunNotFound(run_id)
    return run


async def find_run_async(svc: Services, run_id: str, who: Principal) -> Run | None:
    """:func:`find_run` on the event loop's own Redis client (no thread hop)."""
    if not RUN_ID_RE.match(run_id):
        return None
    run = run_of(await svc.conns.aio.hgetall(keys.run(run_id)))  # type: ignore[arg-type]
    return run if run is not None and run.tenant == who.tenant else None


async def get_run_async(svc: Services, run_id: str, who: Principal, *, ended: bool = False) -> Run:
    """:func:`get_run` on the event loop's own Redis client (``ended``: a run that just succeeded may be taken
    from what this process was told when it ended)."""
    recent = svc.ended.get(run_id) if ended else None
    if recent is not None and recent.tenant == who.tenant:
        return recent
    run = await find_run_async(svc, run_id, who)
    if run is None:
        raise RunNotFound(run_id)
    return run


def find_output(run: Run, filename: str) -> Output:
    """The run's output called ``filename``; raises OutputNotFound."""
    for output in run.outputs:
        if output.filename == filename:
            return output
    raise OutputNotFound(f"run {run.id} has no output {filename!r}")


async def wait(
    svc: Services,
    run_id: str,
    seconds: float,
    who: Principal,
    *,
    or_now: bool = False,
    watch: Watch | None = None,
    stored: Run | None = None,
) -> Run:
    """The run once it has ended, or as it is after ``seconds``; raises RunNotFound.

    ``watch`` and ``stored``: the request stored the run itself (``stored``, as it was written), and watched
    for its end since before (``RunWaits.watching``): no read of the record before waiting.

    A run of another tenant is not waited for. A client that goes away meanwhile changes nothing:
    the run was stored before the wait began. Over the tenant's quota of waiting requests
    (:class:`api.waits.WaitQuota`): TooManyWaits (429), or with ``or_now`` (the request stored or
    changed the run already, so it must not answer an error) the run as it is now.
    """
    try:
        with svc.wait_quota.slot(who.tenant):
            return await _wait(svc, run_id, seconds, who, watch, stored)
    except TooManyWaits:
        if not or_now:
            raise
    return await get_run_async(svc, run_id, who)


async def wait_submitted(svc: Services, accepted: Accepted, watch: Watch | None, seconds: float, who: Principal) -> Run:
    """:func:`wait` for the run a request just submitted under the id it drew and watched since
    (``RunWaits.watching``; ``watch`` None: it drew none): no read of the record before waiting. A replay's
    first run (stored by another request) and a run stored ended (served from the cache) are read as any other."""
    run = accepted.run
    ours = watch is not None and run.id == watch.run_id
    stored = run if ours and not accepted.replayed and run.status is RunStatus.QUEUED else None
    return await wait(svc, run.id, seconds, who, or_now=True, watch=watch if ours else None, stored=stored)


async def _wait(
    svc: Services, run_id: str, seconds: float, who: Principal, watch: Watch | None, stored: Run | None
) -> Run:

    def told(message: str) -> Run | None:
        run = parse_done(message)[1]
        if run is None or run.tenant != who.tenant or not run.status.terminal:
            return None
        svc.ended.put(run)  # its outputs are fetched next, most likely
        return run

    async def read() -> Run:
        found = await find_run_async(svc, run_id, who)
        if found is None:
            raise RunNotFound(run_id)
        return found

    return await svc.waits.wait(
        run_id, seconds, read, lambda run: run.status.terminal, parse=told, watch=watch, known=stored
    )


def view(svc: Services, run: Run, links: Links) -> RunView:
    """The native view of ``run``, with its place in the queue and its ETA (Redis reads while it is queued)."""
    position = svc.runs.queue_position(run)
    eta = None
    if position is not None:
        mean: str | None = svc.conns.text.hget(keys.WORKFLOW_SECONDS, run.workflow)  # type: ignore[assignment]
        workers = sum(1 for w in svc.handout.workers() if w.ready)
        eta = eta_seconds(position=position, workers=workers, mean_seconds=float(mean) if mean else None)
    return run_view(run, queue_position=position, links=links, eta_seconds=eta, waiting_for=waiting_for(svc, run))


def waiting_for(svc: Services, run: Run) -> list[MissingView] | None:
    """What no ready worker has for a queued run (see RunView.waiting_for); None when one can run it."""
    if run.status is not RunStatus.QUEUED or not run.needs:
        return None
    gaps = svc.submitter.fleet.lacking(Needs.from_text(run.needs)) if svc.submitter.fleet is not None else None
    return None if gaps is None else [MissingView(name=g.name, folder=g.folder or None) for g in gaps]


async def view_async(svc: Services, run: Run, links: Links) -> RunView:
    if run.status is RunStatus.QUEUED:  # only a queued run's place takes reading the backlogs
        return await anyio.to_thread.run_sync(view, svc, run, links)
    eta = None
    if run.status is RunStatus.RUNNING and run.started_at is not None:
        mean: str | None = await svc.conns.aio.hget(keys.WORKFLOW_SECONDS, run.workflow)  # type: ignore[misc,assignment]
        running_for = max(0.0, time.time() - run.started_at)
        eta = eta_seconds(position=None, workers=0, mean_seconds=float(mean) if mean else None, running_for=running_for)
    return run_view(run, queue_position=None, links=links, eta_seconds=eta)
