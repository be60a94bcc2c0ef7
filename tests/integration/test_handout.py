"""The API's submit script takes a run and writes its RQ job in the same step: the same writes RQ makes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from redis import Redis
from rq import Queue
from rq.job import Job

from dispatcher import keys
from dispatcher.connections import Connections
from dispatcher.scheduling.dispatch import Dispatched
from dispatcher.scheduling.handout import JOB_FUNC, Handout
from dispatcher.settings import Settings, load_settings
from dispatcher.submit import Submitter
from dispatcher.workflows import Registry

TIMESTAMPS = {b"created_at", b"enqueued_at", b"last_heartbeat"}


def job_state(raw: Redis, job_id: str, queue: str) -> tuple[dict[bytes, bytes], list[bytes], set[bytes]]:
    record = {k: v for k, v in raw.hgetall(f"rq:job:{job_id}").items() if k not in TIMESTAMPS}  # type: ignore[union-attr]
    return record, raw.lrange(f"rq:queue:{queue}", 0, -1), raw.smembers("rq:queues")  # type: ignore[return-value]


@dataclass
class Api:
    """What an API process submits with."""

    settings: Settings
    conns: Connections
    handout: Handout
    submitter: Submitter


@pytest.fixture
def api(redis_url: str) -> Iterator[Api]:
    settings = load_settings({}, redis_url=redis_url)
    conns = Connections.from_url(redis_url)
    submitter = Submitter(conns.text, Registry.load(settings.workflows_dir), settings, wake_scheduler=False)
    yield Api(settings, conns, Handout(settings, conns), submitter)
    conns.close()


def test_a_submission_with_room_is_on_rqs_queue_as_rq_itself_would_put_it(api: Api) -> None:
    raw, queue = api.conns.raw, api.settings.queue_name
    done = api.submitter.accept(
        "invert", {"params": {"width": 8}}, take_routes=1, enqueue_writes=api.handout.enqueue_writes
    )
    run = done.run
    assert done.handed and done.taken is not None
    assert [d.run_id for d in done.taken.runs] == [run.id]
    assert api.conns.text.hget(keys.run(run.id), "dispatches") == "1"
    job_id = f"{run.id}-d1"
    written = job_state(raw, job_id, queue)
    job = Job.fetch(job_id, connection=raw)
    assert (job.func_name, job.args, job.get_status()) == (JOB_FUNC, (run.id, 1), "queued")
    assert job.origin == queue and job.result_ttl == 0

    # The same job enqueued by RQ itself leaves the same state behind (timestamps aside).
    raw.delete(f"rq:job:{job_id}", f"rq:queue:{queue}", "rq:queues")
    api.handout.enqueue([Dispatched(run.id, 1, run.priority.value, run.timeout)])
    assert job_state(raw, job_id, queue) == written
    assert Queue(queue, connection=raw).job_ids == [job_id]


def test_without_room_nothing_is_enqueued(api: Api) -> None:
    done = api.submitter.accept("invert", {}, take_routes=0, enqueue_writes=api.handout.enqueue_writes)
    assert not done.handed and done.taken is not None and done.taken.runs == []
    assert api.conns.raw.llen(f"rq:queue:{api.settings.queue_name}") == 0 and not api.conns.raw.keys("rq:job:*")
    assert api.conns.text.zscore(keys.backlog("default", "normal"), done.run.id) is not None
