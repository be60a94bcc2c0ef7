"""The jobs a worker pops: known by their ids, so popping one costs no read of the job.

A run's job id is ``<run_id>-d<dispatch>`` (``dispatcher.scheduling.handout.job_id``), and that is all its
function, :func:`worker.runner.execute_run`, takes. RQ reads a popped job's hash (a round trip), and
unpickles its function and arguments to call it: between the moment a run is on the queue and the moment
its prompt is posted, on every run. :class:`RunJob` skips both for our ids. RQ still moves the job (BLMOVE
into its intermediate list), and the hash is still written with the job; the run's claim deletes it, and
takes the id off the intermediate list, in its own step (:func:`call`). One case changes: a popped id whose
hash is gone was skipped by RQ, and is now claimed; the claim refuses a dispatch that is not the run's
current one, so it executes at most once, as before. Any other id is fetched and called as RQ does.

Only the worker's pop uses :class:`RunJob` (``job_class``); its queues keep RQ's Job, so RQ's own clean-ups
(the intermediate list, the registries) read jobs as ever.
"""

from __future__ import annotations

from typing import Any

from rq.job import Job

from dispatcher.lease import PoppedJob
from dispatcher.scheduling.handout import run_of_job
from worker import runner


class RunJob(Job):
    """RQ's Job, but a run's job is made from its id instead of read from Redis."""

    @classmethod
    def fetch(cls, id: str, connection: Any = None, serializer: Any = None) -> Job:
        if run_of_job(id) is None:
            return super().fetch(id, connection=connection, serializer=serializer)
        return cls(id, connection=connection, serializer=serializer)


def call(job: Job, intermediate_key: str) -> bool:
    """Run the job's function; whether it took the job off RQ's lists itself (``intermediate_key``: where RQ
    moved it). A run's claim does, in its own step; any other job leaves that to the caller."""
    run = run_of_job(job.id)
    if run is None:
        job.func(*job.args, **job.kwargs)
        return False
    popped = PoppedJob(intermediate_key, job.id, job.key)
    runner.execute_run(*run, popped=popped)
    return popped.forgotten
