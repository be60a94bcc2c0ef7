"""A run's RQ job is known by its id: the worker makes it from the id, and reads any other job as RQ does."""

from __future__ import annotations

import fakeredis
import pytest
from rq import Queue
from rq.exceptions import NoSuchJobError

from dispatcher.lease import PoppedJob
from dispatcher.scheduling.handout import job_id, run_of_job
from worker import jobs, runner

RUN = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize("dispatch", [1, 2, 10, 9_999_999_999])
def test_a_job_id_gives_back_its_run_and_dispatch(dispatch: int) -> None:
    assert run_of_job(job_id(RUN, dispatch)) == (RUN, dispatch)


@pytest.mark.parametrize(
    "other",
    [
        "",
        "3f2c1e9e-7f4b-4f0e-9b5e-1c2d3e4f5a6b",  # RQ's own ids (uuid4)
        f"{RUN}-d0",
        f"{RUN}-d01",
        f"{RUN}-d",
        f"{RUN}-d1x",
        f"{RUN}-d12345678901",
        f"{RUN[:-1]}-d1",
        f"{RUN.upper()}-d1",
        f"x{RUN}-d1",
    ],
)
def test_any_other_id_is_none(other: str) -> None:
    assert run_of_job(other) is None


def test_a_runs_job_is_made_from_its_id_with_nothing_read(monkeypatch: pytest.MonkeyPatch) -> None:
    redis = fakeredis.FakeRedis()
    job = jobs.RunJob.fetch(job_id(RUN, 3), connection=redis)  # no hash in Redis: nothing was read
    assert job.id == f"{RUN}-d3" and job.key == f"rq:job:{RUN}-d3"
    called: list[tuple[str, int, PoppedJob | None]] = []

    def execute_run(run_id: str, dispatch: int, *, popped: PoppedJob | None = None) -> str:
        called.append((run_id, dispatch, popped))
        if dispatch == 3 and popped is not None:  # claimed: the claim's script took the job off RQ's lists
            popped.forgotten = True
            return "accepted"
        return "paused"  # not claimed (ComfyUI down): the caller forgets the job

    monkeypatch.setattr(runner, "execute_run", execute_run)
    assert jobs.call(job, "rq:queue:q:intermediate") is True
    assert called == [(RUN, 3, PoppedJob("rq:queue:q:intermediate", f"{RUN}-d3", f"rq:job:{RUN}-d3", True))]
    assert jobs.call(jobs.RunJob.fetch(job_id(RUN, 4), connection=redis), "rq:queue:q:intermediate") is False


def test_any_other_job_is_read_and_called_as_rq_does() -> None:
    redis = fakeredis.FakeRedis()
    enqueued = Queue("q", connection=redis).enqueue("builtins.print", "hello", job_id="not-a-run")
    job = jobs.RunJob.fetch(enqueued.id, connection=redis)
    assert (job.func_name, job.args) == ("builtins.print", ("hello",))
    with pytest.raises(NoSuchJobError):
        jobs.RunJob.fetch("gone", connection=redis)
