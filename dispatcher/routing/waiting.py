"""Counting the queued runs no ready worker can run: what ``/v1/queues`` and the gauge
``comfy_dispatch_runs_waiting_for_capability`` report (``COMFY_DISPATCH_UNSERVABLE_RUNS=queue``, or a fleet whose
last capable worker left).

Each run keeps its needs (:mod:`dispatcher.routing.capabilities`); runs of a workflow and checkpoint share them,
so the fleet's sets are asked once per distinct needs. The count reads at most :data:`SCAN_LIMIT` queued runs,
the oldest of each backlog first: past that it says how many it looked at.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis import Redis

from dispatcher import keys
from dispatcher.routing.capabilities import Needs
from dispatcher.routing.store import FleetCapabilities
from dispatcher.runs import PRIORITIES

SCAN_LIMIT = 10_000


@dataclass(frozen=True)
class Unservable:
    runs: int  # queued runs (of those looked at) that no ready worker can run
    looked_at: int  # queued runs whose needs were read
    complete: bool  # every queued run was looked at


def count_unservable(redis: Redis, fleet: FleetCapabilities, *, limit: int = SCAN_LIMIT) -> Unservable:
    """How many queued runs no ready worker can run now (``redis`` decodes responses); 0 while no ready worker
    has published a capability set (no worker at all is another matter: every run waits for one)."""
    if not any(w.ready and w.caps for w in fleet.workers()):
        return Unservable(0, 0, True)
    pipe = redis.pipeline(transaction=False)
    for priority in PRIORITIES:
        pipe.lrange(keys.rotation(priority), 0, -1)
    backlogs = [
        keys.backlog(tenant, p.value)
        for p, tenants in zip(PRIORITIES, pipe.execute(), strict=True)
        for tenant in dict.fromkeys(tenants)
    ]
    run_ids: list[str] = []
    complete = True
    for backlog in backlogs:
        room = limit - len(run_ids)
        if room <= 0:
            complete = False
            break
        found: list[str] = redis.zrange(backlog, 0, room)  # type: ignore[assignment]
        if len(found) > room:
            complete, found = False, found[:room]
        run_ids += found
    pipe = redis.pipeline(transaction=False)
    for run_id in run_ids:
        pipe.hget(keys.run(run_id), "needs")
    by_needs: dict[str, int] = {}
    for needs in pipe.execute():
        if needs:
            by_needs[needs] = by_needs.get(needs, 0) + 1
    runs = sum(count for text, count in by_needs.items() if fleet.lacking(Needs.from_text(text)) is not None)
    return Unservable(runs, len(run_ids), complete)
