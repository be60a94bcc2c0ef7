"""The jobs a worker pops: known by their ids, so popping one costs no read of the job.

A run's job id is ``<run_id>-d<dispatch>`` (``dispatcher.scheduling.handout.job_id``), and that is all its
function, :func:`worker.runner.execute_run`, takes. RQ reads a popped job's hash and unpickles its
function and arguments before handing it over: a round trip and some CPU between the moment a run is on
the queue and the moment its prompt is posted, on every run. :class:`RunJob` skips them for our ids.
Nothing else changes: RQ still moves the job (BLMOVE into its intermediate list), the hash is still
written with the job and deleted after it, and a job whose run was dispatched again since is refused by
the claim, as before. Any other id is fetched and called as RQ does.
"""

from __future__ import annotations

from typing import Any

from rq.job import Job

from dispatcher.scheduling.handout import run_of_job
from worker import runner


class RunJob(Job):
    """RQ's Job, but a run's job is made from its id instead of read from Redis."""

    @classmethod
    def fetch(cls, id: str, connection: Any = None, serializer: Any = None) -> Job:
        if run_of_job(id) is None:
            return super().fetch(id, connection=connection, serializer=serializer)
        return cls(id, connection=connection, serializer=serializer)


def call(job: Job) -> None:
    """Run the job's function."""
    run = run_of_job(job.id)
    if run is None:
        job.func(*job.args, **job.kwargs)
    else:
        runner.execute_run(*run)
