"""Handing queued runs to RQ: one dispatch pass takes what fits in the free pipeline slots and enqueues its jobs.

The scheduler runs a pass on every event (``dispatcher.scheduling.scheduler``); an API process runs one right after
storing a run, so a run submitted to a fleet with room starts without waiting for the scheduler to wake.
Taking is one atomic script (``dispatcher.scheduling.dispatch``), so any number of processes may run passes.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any

from rq import Queue
from rq.queue import EnqueueData

from dispatcher import metrics
from dispatcher.connections import Connections
from dispatcher.fleet import WorkerInfo, read_workers
from dispatcher.routing.lua import ANY, encode_routes, route_queue
from dispatcher.scheduling.dispatch import Dispatched, Dispatcher, Taken
from dispatcher.scheduling.rq_writes import JobWrites
from dispatcher.settings import Settings

log = logging.getLogger(__name__)

JOB_FUNC = "worker.runner.execute_run"
_JOB_ID = re.compile(r"([0-9a-f]{32})-d([1-9][0-9]{0,9})")


def job_id(run_id: str, dispatch: int) -> str:
    """The RQ job id of a run's dispatch; it says all the job's function takes (:func:`run_of_job`)."""
    return f"{run_id}-d{dispatch}"  # RQ ids: letters, digits, _ and - only


def describe(run_id: str, dispatch: int) -> str:
    """A run's RQ job's description (what ``rq info`` shows)."""
    return f"run {run_id} dispatch {dispatch}"


def run_of_job(job: str) -> tuple[str, int] | None:
    """The run id and dispatch number a job id of :func:`job_id` holds; None for any other id."""
    match = _JOB_ID.fullmatch(job)
    return (match[1], int(match[2])) if match else None


# The fleet's slots are read again at most this often, and at once when a worker comes or goes: a pass
# that follows a submission then costs two round trips (take, enqueue), not four.
SLOTS_MAX_AGE = 0.5
# While a newer view is being read (``refreshing``: an API process reads it off the request path), the last one
# is used up to this age.
STALE_MAX_AGE = 2 * SLOTS_MAX_AGE


class Handout:
    """Dispatch passes of one process, with its cached view of the fleet's slots."""

    def __init__(self, settings: Settings, conns: Connections) -> None:
        self.settings = settings
        self.conns = conns
        self.queue = Queue(settings.queue_name, connection=conns.raw)
        self.job_writes = JobWrites(self.queue, JOB_FUNC, describe, job_id, self._rq_writes)
        self._queues: dict[str, Queue] = {ANY: self.queue}
        self.dispatcher = Dispatcher(conns.text, dispatch_rate=settings.dispatch_rate, max_running=settings.max_running)
        self._workers: list[WorkerInfo] = []
        self._workers_read = -STALE_MAX_AGE
        self.refreshing = False  # a newer view is being read: the cached one serves up to STALE_MAX_AGE
        # Gets every new list of workers before anyone else does (an API process derives what they can run).
        self.on_read: Callable[[list[WorkerInfo]], object] | None = None

    def workers(self, *, fresh: bool = False) -> list[WorkerInfo]:
        """The workers alive, as their heartbeats say, read at most every SLOTS_MAX_AGE seconds unless ``fresh``
        (STALE_MAX_AGE while ``refreshing``)."""
        if fresh or time.monotonic() - self._workers_read >= (STALE_MAX_AGE if self.refreshing else SLOTS_MAX_AGE):
            return self.refresh()
        return self._workers

    def refresh(self) -> list[WorkerInfo]:
        """Read the workers alive now; ``on_read`` gets the new list before :meth:`workers` gives it to anyone."""
        now = time.monotonic()
        workers = read_workers(self.conns.text, since=time.time() - 3 * self.settings.worker_heartbeat)
        if self.on_read is not None:
            self.on_read(workers)
        self._workers, self._workers_read = workers, now
        return workers

    def view_fresh(self, margin: float = 0.1) -> bool:
        """Whether :meth:`workers` answers from its cached read for ``margin`` seconds more (no I/O)."""
        return time.monotonic() - self._workers_read < SLOTS_MAX_AGE - margin

    def view_usable(self, margin: float = 0.1) -> bool:
        """Whether the cached read may serve ``margin`` seconds more while a newer one is read (see ``refreshing``)."""
        return time.monotonic() - self._workers_read < STALE_MAX_AGE - margin

    def ready_slots(self, *, fresh: bool = False) -> int:
        """Runs the ready workers can hold in all (the sum of their pipeline depths)."""
        return sum(w.slots for w in self.workers(fresh=fresh) if w.ready)

    def ready_routes(self, *, fresh: bool = False) -> str:
        """The ready workers' slots by capability set, as the dispatch script reads them."""
        settings = self.settings
        return encode_routes(
            self.workers(fresh=fresh), affinity=settings.model_affinity, affinity_wait=settings.affinity_wait_seconds
        )

    def dispatch(self, *, fresh: bool = False) -> Taken:
        """Hand what may go now to RQ: what went, and seconds until something blocked may move by itself."""
        taken = self.dispatcher.take(self.ready_routes(fresh=fresh))
        if taken.runs:
            self.enqueue(taken.runs)
        return taken

    def enqueue(self, runs: list[Dispatched]) -> None:
        """Put the RQ jobs of runs just taken on the queue, in one round trip."""
        # If we die between take and this, the reaper dispatches the runs again after dispatch_timeout.
        by_route: dict[str, list[Dispatched]] = {}
        for run in runs:
            by_route.setdefault(run.route, []).append(run)
        with self.conns.raw.pipeline(transaction=True) as rq_pipe:
            for route, routed in by_route.items():
                jobs = [self._job(run.run_id, run.dispatch, self._timeout(run)) for run in routed]
                self._queue(route).enqueue_many(jobs, pipeline=rq_pipe)
            rq_pipe.execute()
        self.count(runs)

    def count(self, runs: list[Dispatched]) -> None:
        for run in runs:
            metrics.RUNS_DISPATCHED.labels(run.priority).inc()
            metrics.RUNS_ROUTED.labels(run.model).inc()
        log.debug("dispatched %d run(s)", len(runs))

    def enqueue_writes(self, run: Dispatched) -> list[list[Any]]:
        """The writes RQ's own enqueue of ``run``'s job makes (job hash, status, queue push), not sent: a script
        that takes the run can make them in the same step (``dispatcher.submit``), so the job is on the queue the
        moment the run is taken, with no round trip of its own, and never one without the other. Made from what
        RQ wrote for a stand-in run (:class:`JobWrites`), not by RQ for every run."""
        return self.job_writes(run.run_id, run.dispatch, self._timeout(run))

    def _rq_writes(self, run_id: str, dispatch: int, timeout: int) -> list[list[Any]]:
        """RQ's own enqueue of a run's job, recorded (``JobWrites`` calls it for its stand-ins)."""
        pipe = self.conns.raw.pipeline(transaction=False)
        self.queue.enqueue_many([self._job(run_id, dispatch, timeout)], pipeline=pipe)
        writes = [list(args) for args, _options in pipe.command_stack]
        pipe.reset()
        return writes

    def _queue(self, route: str) -> Queue:
        """The RQ queue of a route: the shared one, or the one of a capability set's workers."""
        if route not in self._queues:
            self._queues[route] = Queue(route_queue(self.settings.queue_name, route), connection=self.conns.raw)
        return self._queues[route]

    def _timeout(self, run: Dispatched) -> int:
        # The job only claims its run and hands it to the worker's pipeline; our own limit times the run.
        return int(run.timeout or self.settings.run_timeout) + 120

    def _job(self, run_id: str, dispatch: int, timeout: int) -> EnqueueData:
        return self.queue.prepare_data(
            JOB_FUNC,
            args=(run_id, dispatch),
            job_id=job_id(run_id, dispatch),
            timeout=timeout,
            result_ttl=0,  # the run record is the truth; RQ's copy of the outcome is not needed
            failure_ttl=3600,
            description=describe(run_id, dispatch),
        )
