"""Leases, fencing, requeue, the reaper, cancel and the dead-letter set, on fakeredis."""

from __future__ import annotations

import time

import pytest
from redis.client import PubSub

from dispatcher import keys
from dispatcher.cancel import Canceller, CancelResult
from dispatcher.connections import Connections
from dispatcher.deadletter import DeadLetters
from dispatcher.errors import Conflict
from dispatcher.lease import ClaimResult, Lease, PoppedJob, RequeueResult
from dispatcher.runs import Output, Run, RunStatus
from dispatcher.scheduling.recovery import Reaper
from tests.unit.dispatch_helpers import Bench


@pytest.fixture
def bench(fake_conns: Connections) -> Bench:
    return Bench.build(fake_conns)


def dispatched(bench: Bench, **kwargs: object) -> Run:
    run = bench.submit(**kwargs)  # type: ignore[arg-type]
    assert [r for r, _ in bench.take(100)] == [run.id]
    return bench.run(run.id)


def claimed(bench: Bench, worker: str = "w1") -> tuple[Run, Lease]:
    run = dispatched(bench)
    claim = bench.leases.claim(run.id, worker, run.dispatches, comfyui_url="http://c")
    assert claim.result is ClaimResult.OK and claim.lease is not None
    return bench.run(run.id), claim.lease


def reaper(bench: Bench, dispatch_timeout: float = 30.0) -> Reaper:
    return Reaper(bench.conns.text, bench.leases, dispatch_timeout=dispatch_timeout, retry_base=0.001, retry_cap=0.001)


def test_claim_starts_the_run(bench: Bench) -> None:
    run, lease = claimed(bench)
    assert lease == Lease(run.id, "w1", 1)
    assert run.status is RunStatus.RUNNING and run.worker == "w1" and run.comfyui_url == "http://c" and run.started_at


def test_a_second_delivery_of_the_same_dispatch_is_busy(bench: Bench) -> None:
    run, _ = claimed(bench)
    again = bench.leases.claim(run.id, "w2", run.dispatches)
    assert again.result is ClaimResult.BUSY and again.detail == "w1|1"


@pytest.mark.parametrize("again", [False, True])
def test_the_claim_forgets_the_popped_rq_job_whatever_it_answers(bench: Bench, again: bool) -> None:
    """What the worker's RQ loop would otherwise do in a round trip of its own after every claim."""
    run = dispatched(bench)
    if again:  # a second delivery: refused, and its job is spent all the same
        bench.leases.claim(run.id, "w1", run.dispatches)
    job = f"{run.id}-d{run.dispatches}"
    redis = bench.conns.text
    redis.rpush("rq:queue:q:intermediate", "other", job)
    redis.hset(f"rq:job:{job}", "status", "queued")
    popped = PoppedJob("rq:queue:q:intermediate", job, f"rq:job:{job}")
    claim = bench.leases.claim(run.id, "w2", run.dispatches, popped=popped)
    assert claim.result is (ClaimResult.BUSY if again else ClaimResult.OK) and popped.forgotten
    assert redis.lrange("rq:queue:q:intermediate", 0, -1) == ["other"]
    assert not redis.exists(f"rq:job:{job}")


def test_an_older_dispatch_is_stale(bench: Bench) -> None:
    run = dispatched(bench)
    assert bench.leases.claim(run.id, "w1", run.dispatches - 1).result is ClaimResult.STALE


def test_a_finished_run_is_never_claimed_again(bench: Bench) -> None:
    run, lease = claimed(bench)
    out = Output("3", "a.png", "image/png", 10, f"{run.id}/1/a.png")
    assert bench.leases.complete(lease, run, RunStatus.SUCCEEDED, outputs=[out])
    again = bench.leases.claim(run.id, "w2", run.dispatches)
    assert again.result is ClaimResult.DONE and again.detail == "succeeded"
    done = bench.run(run.id)
    assert done.outputs == [out] and done.progress == 1.0 and done.finished_at
    assert bench.conns.text.zcard(keys.INFLIGHT) == 0
    assert bench.conns.text.ttl(keys.run(run.id)) > 0


def test_a_lost_lease_is_fenced_off(bench: Bench) -> None:
    run, stale = claimed(bench)
    bench.conns.text.set(keys.run_lease(run.id), "w2|2")  # someone else holds it now
    assert not bench.leases.renew(stale)
    assert not bench.leases.update(stale, progress="0.5")
    assert not bench.leases.complete(stale, run, RunStatus.FAILED, error={"message": "late"})
    assert bench.leases.requeue(stale, run, error={}, delay=0) is RequeueResult.LOST
    assert bench.run(run.id).status is RunStatus.RUNNING


def test_requeue_puts_the_run_back_after_its_backoff(bench: Bench) -> None:
    run, lease = claimed(bench)
    error = {"type": "ComfyUIUnavailable", "message": "down"}
    assert bench.leases.requeue(lease, run, error=error, delay=60) is RequeueResult.RETRYING
    queued = bench.run(run.id)
    assert queued.status is RunStatus.QUEUED and queued.error == error and queued.attempts == 1
    taken = bench.dispatcher.take(5)
    assert taken.runs == [] and taken.wait is not None and 59 < taken.wait <= 60  # still backing off
    assert bench.conns.text.zscore(keys.DELAYED, run.id) is not None


def test_a_retry_whose_backoff_ended_goes_before_newer_runs(bench: Bench) -> None:
    run, lease = claimed(bench)
    newer = [bench.submit().id for _ in range(2)]
    assert bench.leases.requeue(lease, run, error={}, delay=0) is RequeueResult.RETRYING
    assert [r for r, _ in bench.take(1)] == [run.id]
    assert [r for r, _ in bench.take(3)] == newer


def test_requeue_with_no_attempt_left_dead_letters(bench: Bench) -> None:
    run, lease = claimed(bench)
    bench.conns.text.hset(keys.run(run.id), "max_attempts", "1")
    assert bench.leases.requeue(lease, run, error={"message": "oom"}, delay=0) is RequeueResult.DEAD
    dead = bench.run(run.id)
    assert dead.status is RunStatus.FAILED and dead.error == {"message": "oom"}
    assert DeadLetters(bench.conns.text).ids() == [run.id]
    assert bench.conns.text.ttl(keys.run(run.id)) == -1  # kept until requeued


def test_dead_letter_requeue_gives_fresh_attempts(bench: Bench) -> None:
    run, lease = claimed(bench)
    bench.conns.text.hset(keys.run(run.id), "max_attempts", "1")
    bench.leases.requeue(lease, run, error={"message": "oom"}, delay=0)
    letters = DeadLetters(bench.conns.text)
    assert letters.requeue(run.id)
    again = bench.run(run.id)
    assert again.status is RunStatus.QUEUED and again.attempts == 0 and again.error is None
    assert letters.ids() == [] and not letters.requeue(run.id)
    assert [r for r, _ in bench.take(1)] == [run.id]


def test_reaper_retries_a_run_whose_worker_died(bench: Bench) -> None:
    run, _ = claimed(bench)
    bench.conns.text.delete(keys.run_lease(run.id))  # the lease expired: the worker is gone
    report = reaper(bench).reap()
    assert report.retried == 1
    queued = bench.run(run.id)
    assert queued.status is RunStatus.QUEUED and queued.error and queued.error["type"] == "worker_died"
    time.sleep(0.01)  # its (tiny) backoff
    ((again, dispatch),) = bench.take(1) or [(None, 0)]
    assert again == run.id and dispatch == 2
    assert bench.leases.claim(run.id, "w2", dispatch).lease == Lease(run.id, "w2", 2)


def test_reaper_leaves_live_runs_alone(bench: Bench) -> None:
    claimed(bench)
    assert reaper(bench).reap().retried == 0


def test_reaper_dispatches_again_what_nobody_claimed(bench: Bench) -> None:
    run = dispatched(bench)
    assert reaper(bench, dispatch_timeout=3600).reap().redispatched == 0
    assert reaper(bench, dispatch_timeout=0).reap().redispatched == 1
    assert bench.run(run.id).attempts == 0
    ((again, dispatch),) = bench.take(1)
    assert again == run.id and dispatch == 2
    assert bench.leases.claim(run.id, "w", 1).result is ClaimResult.STALE  # the lost job, if it ever shows up


def test_cancel_of_a_queued_run(bench: Bench) -> None:
    run = bench.submit()
    canceller = Canceller(bench.conns.text, run_ttl_seconds=60)
    assert canceller.cancel(run) is CancelResult.CANCELED
    assert bench.run(run.id).status is RunStatus.CANCELED
    assert bench.take(5) == []
    assert canceller.cancel(run) is CancelResult.ALREADY_CANCELED  # idempotent: nothing changes, nothing counted


def test_cancel_of_a_dispatched_run_makes_its_job_a_no_op(bench: Bench) -> None:
    run = dispatched(bench)
    assert Canceller(bench.conns.text, run_ttl_seconds=60).cancel(run) is CancelResult.CANCELED
    assert bench.leases.claim(run.id, "w", run.dispatches).result is ClaimResult.DONE
    assert bench.conns.text.zcard(keys.INFLIGHT) == 0


def test_cancel_of_a_running_run_asks_its_worker(bench: Bench) -> None:
    run, lease = claimed(bench)
    pubsub = bench.conns.text.pubsub()
    pubsub.subscribe(keys.CANCEL)
    assert Canceller(bench.conns.text, run_ttl_seconds=60).cancel(run) is CancelResult.CANCELING
    messages = [pubsub.get_message(timeout=1) for _ in range(2)]
    assert any(m and m["data"] == run.id for m in messages)
    assert bench.run(run.id).cancel_requested
    # its worker dies before acting on it: the reaper ends it as canceled, not retried
    bench.conns.text.delete(keys.run_lease(run.id))
    reaper(bench).reap()
    assert bench.run(run.id).status is RunStatus.CANCELED


def test_cancel_of_a_finished_run_is_a_conflict(bench: Bench) -> None:
    run, lease = claimed(bench)
    bench.leases.complete(lease, run, RunStatus.SUCCEEDED)
    with pytest.raises(Conflict):
        Canceller(bench.conns.text, run_ttl_seconds=60).cancel(run)


def published_before_end(pubsub: PubSub, bench: Bench) -> list[str]:
    """What the wake channel carried before an "end" published now (so after all of it)."""
    bench.conns.text.publish(keys.SCHEDULER_WAKE, "end")
    data: list[str] = []
    deadline = time.monotonic() + 5
    while "end" not in data and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.1)
        if message is not None:
            data.append(message["data"])
    return data[: data.index("end")]


@pytest.mark.parametrize(
    ("idle", "others", "woken"),
    [
        (True, 0, []),  # an idle fleet: nothing to tell
        (True, 2, ["idle"]),  # two runs in flight elsewhere: one may wait behind the other, to move here
        (False, 2, []),  # the worker holds another run: it is not idle
    ],
    ids=["idle-fleet", "idle-two-inflight", "not-idle"],
)
def test_completing_a_workers_last_run_tells_the_scheduler_as_tell_idle_would(
    bench: Bench, idle: bool, others: int, woken: list[str]
) -> None:
    run, lease = claimed(bench)
    for i in range(others):
        bench.conns.text.zadd(keys.INFLIGHT, {f"other{i}": i})
    pubsub = bench.conns.text.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(keys.SCHEDULER_WAKE)
    try:
        assert bench.leases.complete(lease, run, RunStatus.SUCCEEDED, outputs=[], idle=idle)
        assert published_before_end(pubsub, bench) == woken
    finally:
        pubsub.close()


def test_a_lost_lease_tells_nothing(bench: Bench) -> None:
    run, lease = claimed(bench)
    bench.conns.text.zadd(keys.INFLIGHT, {"other0": 0, "other1": 1})
    pubsub = bench.conns.text.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(keys.SCHEDULER_WAKE)
    try:
        assert not bench.leases.complete(Lease(run.id, "w1", 99), run, RunStatus.SUCCEEDED, outputs=[], idle=True)
        assert published_before_end(pubsub, bench) == []
    finally:
        pubsub.close()
