"""dispatcher.batches on fakeredis: a batch counts the runs its request stored, and its ``batch.done`` entry is
written exactly once, when it is sealed and every run ended, whatever the order (through the real submit,
cache, cancel, lease and dead-letter scripts)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import pytest

from dispatcher import keys
from dispatcher.batches import BATCH_DONE, MAX_ITEMS, Batch, BatchStore, new_batch_id
from dispatcher.cancel import Canceller, CancelResult
from dispatcher.connections import Connections
from dispatcher.deadletter import DeadLetters
from dispatcher.errors import BatchNotFound, Conflict, DispatchError, ParameterError, QueueFull, WorkflowNotFound
from dispatcher.lease import RequeueResult
from dispatcher.runs import Run, RunStatus
from dispatcher.submit import Submission, Submitter
from dispatcher.workflows import Registry
from tests.events_helpers import Life
from tests.unit.dispatch_helpers import Bench

DONE_URL = "https://hooks.example.com/batch-done"
Item = tuple[str, dict[str, Any], str | None]


def item(color: int = 0, workflow: str = "invert", key: str | None = None, **body: Any) -> Item:
    return workflow, {"params": {"width": 8, "height": 8, "color": color}, **body}, key


@dataclass
class Harness:
    bench: Bench
    store: BatchStore
    canceller: Canceller

    @property
    def redis(self) -> Any:
        return self.bench.conns.text

    def open(
        self, items: list[Item], *, tenant: str = "acme", done_url: str | None = DONE_URL
    ) -> tuple[str, list[Any]]:
        """What POST /v1/runs/batch does, but the seal: open the batch, store its items."""
        batch_id = new_batch_id()
        self.store.open(batch_id, tenant, done_url)
        return batch_id, self.bench.submitter.accept_many(items, tenant=tenant, batch_id=batch_id)

    def submit(
        self, items: list[Item], *, tenant: str = "acme", done_url: str | None = DONE_URL
    ) -> tuple[str, list[Any]]:
        batch_id, results = self.open(items, tenant=tenant, done_url=done_url)
        made = [r.run.id for r in results if isinstance(r, Submission) and not r.replayed]
        self.store.seal(batch_id, made)
        return batch_id, results

    def get(self, batch_id: str, tenant: str = "acme") -> Batch:
        return self.store.get(batch_id, tenant)

    def record(self, batch_id: str) -> dict[str, str]:
        found: dict[str, str] = self.redis.hgetall(keys.batch(batch_id))
        return found

    def done_entries(self, batch_id: str | None = None) -> list[dict[str, str]]:
        """The batch entries of the webhook stream (of ``batch_id``, or of any batch)."""
        entries = self.redis.xrange(keys.WEBHOOK_EVENTS)
        return [f for _, f in entries if "batch" in f and (batch_id is None or f["batch"] == batch_id)]

    def run(self, run_id: str) -> Run:
        return self.bench.run(run_id)

    def cancel(self, run_id: str) -> CancelResult:
        return self.canceller.cancel(self.run(run_id))

    def succeed(self, run_id: str, gpu: float = 0.0) -> None:
        life = Life(self.redis, run_id).start()
        assert life.lease is not None
        assert life.leases.complete(life.lease, life.run(), RunStatus.SUCCEEDED, gpu_seconds=gpu)

    def fail(self, run_id: str) -> None:
        Life(self.redis, run_id).start().fail("boom")


def ids(results: list[Any]) -> list[str]:
    return [r.run.id for r in results if isinstance(r, Submission)]


@pytest.fixture
def harness(fake_conns: Connections) -> Harness:
    bench = Bench.build(fake_conns)
    invert = bench.submitter.registry.get("invert")
    registry = Registry([invert, replace(invert, id="invert-cached", cache=True)])
    bench.submitter = Submitter(fake_conns.text, registry, bench.settings)
    return Harness(
        bench,
        BatchStore(fake_conns.text, ttl_seconds=bench.settings.run_ttl_seconds),
        Canceller(fake_conns.text, run_ttl_seconds=bench.settings.run_ttl_seconds),
    )


# -- counting ----------------------------------------------------------------------------------------------------------


def test_new_batch_ids_are_distinct_and_prefixed() -> None:
    made = {new_batch_id() for _ in range(100)}
    assert len(made) == 100 and all(b.startswith("b_") and len(b) == 26 for b in made)
    assert MAX_ITEMS == 1000


def test_a_batch_counts_the_runs_its_request_stored(harness: Harness) -> None:
    items = [item(1), item(2, workflow="nope"), item(3), item(4, priority="urgent"), item(5)]
    batch_id, results = harness.submit(items)
    assert [type(r) for r in results] == [Submission, WorkflowNotFound, Submission, ParameterError, Submission]
    stored = ids(results)
    batch = harness.get(batch_id)
    assert (batch.id, batch.tenant, batch.total, batch.on_done_url) == (batch_id, "acme", 3, DONE_URL)
    assert batch.counts == {"queued": 3, "running": 0, "succeeded": 0, "failed": 0, "canceled": 0}
    assert (batch.ended, batch.done, batch.gpu_seconds) == (0, False, 0.0)
    assert batch.created_at > 0
    assert harness.store.run_ids(batch_id) == stored  # in the order of the items
    assert [r.id for r in harness.store.runs(batch_id, start=0, count=10)] == stored
    assert all(harness.run(r).batch_id == batch_id for r in stored)
    record = harness.record(batch_id)
    assert (record["total"], record["left"], record["sealed"]) == ("3", "3", "1")
    assert "fired" not in record
    assert harness.done_entries() == []


def test_runs_of_no_batch_count_in_none(harness: Harness) -> None:
    run = harness.bench.submit(tenant="acme")
    assert harness.run(run.id).batch_id == ""
    assert "batch" not in harness.redis.hgetall(keys.run(run.id))
    harness.cancel(run.id)
    assert harness.redis.keys(keys.batch("*")) == []


def test_runs_pages_in_item_order(harness: Harness) -> None:
    batch_id, results = harness.submit([item(i) for i in range(7)])
    stored = ids(results)
    assert [r.id for r in harness.store.runs(batch_id, start=0, count=3)] == stored[:3]
    assert [r.id for r in harness.store.runs(batch_id, start=3, count=3)] == stored[3:6]
    assert [r.id for r in harness.store.runs(batch_id, start=6, count=3)] == stored[6:]
    assert harness.store.runs(batch_id, start=7, count=3) == []


def test_runs_whose_records_are_gone_are_left_out(harness: Harness) -> None:
    batch_id, results = harness.submit([item(i) for i in range(3)])
    stored = ids(results)
    harness.redis.delete(keys.run(stored[1]))
    assert [r.id for r in harness.store.runs(batch_id, start=0, count=3)] == [stored[0], stored[2]]
    assert harness.get(batch_id).counts["queued"] == 2


def test_counts_follow_the_runs(harness: Harness) -> None:
    batch_id, results = harness.submit([item(i) for i in range(5)])
    a, b, c, d, _ = ids(results)
    assert harness.cancel(a) is CancelResult.CANCELED
    harness.succeed(b, gpu=2.5)
    harness.fail(c)
    Life(harness.redis, d).start()
    batch = harness.get(batch_id)
    assert batch.counts == {"queued": 1, "running": 1, "succeeded": 1, "failed": 1, "canceled": 1}
    assert (batch.ended, batch.done, batch.gpu_seconds) == (3, False, 2.5)
    assert harness.record(batch_id)["left"] == "2"


def test_the_records_expire_with_the_runs(harness: Harness) -> None:
    batch_id, _ = harness.submit([item(1)])
    ttl = 2 * harness.bench.settings.run_ttl_seconds
    assert ttl - 5 <= harness.redis.ttl(keys.batch(batch_id)) <= ttl
    assert ttl - 5 <= harness.redis.ttl(keys.batch_runs(batch_id)) <= ttl


def test_items_over_the_tenants_queue_limit_are_refused_and_not_counted(fake_conns: Connections) -> None:
    bench = Bench.build(fake_conns, max_queued=2)
    harness = Harness(
        bench, BatchStore(fake_conns.text, ttl_seconds=60), Canceller(fake_conns.text, run_ttl_seconds=60)
    )
    batch_id, results = harness.submit([item(i) for i in range(4)])
    assert [type(r) for r in results] == [Submission, Submission, QueueFull, QueueFull]
    assert harness.get(batch_id).total == 2


# -- another tenant's, or none -----------------------------------------------------------------------------------------


def test_another_tenants_batch_is_not_found(harness: Harness) -> None:
    batch_id, _ = harness.submit([item(1)], tenant="acme")
    with pytest.raises(BatchNotFound) as caught:
        harness.get(batch_id, tenant="other")
    assert caught.value.batch_id == batch_id
    with pytest.raises(BatchNotFound):
        harness.get(batch_id, tenant="")


def test_an_unknown_batch_is_not_found(harness: Harness) -> None:
    with pytest.raises(BatchNotFound):
        harness.get("b_" + "0" * 24)


# -- batch.done --------------------------------------------------------------------------------------------------------


def test_batch_done_is_written_once_when_the_last_run_ends(harness: Harness) -> None:
    batch_id, results = harness.submit([item(i) for i in range(3)])
    a, b, c = ids(results)
    harness.succeed(a)
    harness.cancel(b)
    assert harness.done_entries() == []
    harness.fail(c)
    assert harness.done_entries() == [{"batch": batch_id, "type": BATCH_DONE}]
    batch = harness.get(batch_id)
    assert batch.done and batch.ended == 3
    assert harness.record(batch_id)["fired"] == "1"
    assert harness.cancel(b) is CancelResult.ALREADY_CANCELED  # sent again: nothing moves
    assert len(harness.done_entries()) == 1
    assert harness.record(batch_id)["left"] == "0"


def test_a_batch_without_a_callback_writes_nothing(harness: Harness) -> None:
    batch_id, results = harness.submit([item(1), item(2)], done_url=None)
    for run_id in ids(results):
        harness.cancel(run_id)
    assert harness.get(batch_id).done
    assert harness.done_entries() == []
    assert "on_done_url" not in harness.record(batch_id)


def test_runs_that_end_before_the_seal_fire_at_the_seal(harness: Harness) -> None:
    batch_id, results = harness.open([item(1), item(2)])
    for run_id in ids(results):
        harness.cancel(run_id)
    assert harness.done_entries() == []  # more items may still come
    harness.store.seal(batch_id)
    assert harness.done_entries() == [{"batch": batch_id, "type": BATCH_DONE}]
    harness.store.seal(batch_id)
    assert len(harness.done_entries()) == 1


def test_a_batch_of_cache_hits_fires_at_the_seal(harness: Harness) -> None:
    first = harness.bench.submitter.submit("invert-cached", item(9)[1], tenant="acme")
    harness.succeed(first.id)
    batch_id, results = harness.open([item(9, workflow="invert-cached")] * 2)
    assert [r.run.status for r in results] == [RunStatus.SUCCEEDED] * 2  # served at once: ended before the seal
    assert all(r.run.cached_from == first.id for r in results)
    assert harness.done_entries() == []
    assert harness.record(batch_id)["left"] == "0"
    harness.store.seal(batch_id)
    assert harness.done_entries() == [{"batch": batch_id, "type": BATCH_DONE}]
    batch = harness.get(batch_id)
    assert (batch.total, batch.counts["succeeded"], batch.done) == (2, 2, True)


def cached_between_queued(harness: Harness) -> tuple[str, list[Run]]:
    first = harness.bench.submitter.submit("invert-cached", item(9)[1], tenant="acme")
    harness.succeed(first.id)
    batch_id, results = harness.submit([item(1), item(9, workflow="invert-cached"), item(2)])
    return batch_id, [r.run for r in results]


def test_a_cache_hit_beside_queued_runs_waits_for_them(harness: Harness) -> None:
    batch_id, (queued_a, hit, queued_b) = cached_between_queued(harness)
    assert hit.status is RunStatus.SUCCEEDED and queued_a.status is queued_b.status is RunStatus.QUEUED
    assert harness.record(batch_id)["left"] == "2"
    harness.cancel(queued_a.id)
    assert harness.done_entries() == []
    harness.succeed(queued_b.id)
    assert harness.done_entries() == [{"batch": batch_id, "type": BATCH_DONE}]


def test_a_cache_hit_keeps_its_place_among_the_items(harness: Harness) -> None:
    batch_id, runs = cached_between_queued(harness)
    assert harness.store.run_ids(batch_id) == [r.id for r in runs]  # in the order of the items


def test_a_batch_of_replays_only_is_dropped(harness: Harness) -> None:
    items = [item(1, key="line-1"), item(2, key="line-2")]
    first_id, first = harness.submit(items, done_url=None)
    again_id, again = harness.submit(items)
    assert [r.replayed for r in again] == [True, True]
    assert ids(again) == ids(first)  # the runs the keys named, stored in the first batch
    with pytest.raises(BatchNotFound):
        harness.get(again_id)
    assert harness.done_entries() == [] and not harness.redis.exists(keys.batch_runs(again_id))
    assert harness.get(first_id).total == 2  # the replays count where they were stored
    assert all(harness.run(r).batch_id == first_id for r in ids(first))
    for run_id in ids(first):
        harness.cancel(run_id)
    assert harness.done_entries() == []  # the first batch had no callback, the second is gone


def test_a_replay_beside_new_runs_is_not_counted(harness: Harness) -> None:
    _, first = harness.submit([item(1, key="line-1")], done_url=None)
    batch_id, results = harness.submit([item(1, key="line-1"), item(2, key="line-2")])
    assert [r.replayed for r in results] == [True, False]
    assert harness.get(batch_id).total == 1
    assert harness.store.run_ids(batch_id) == [results[1].run.id]
    harness.cancel(results[1].run.id)
    assert harness.done_entries() == [{"batch": batch_id, "type": BATCH_DONE}]


def test_idempotency_keys_within_a_batch(harness: Harness) -> None:
    batch_id, results = harness.submit([item(1, key="k"), item(1, key="k"), item(2, key="k")])
    first, replay, conflict = results
    assert isinstance(first, Submission) and not first.replayed
    assert isinstance(replay, Submission) and replay.replayed and replay.run.id == first.run.id
    assert isinstance(conflict, Conflict)
    assert harness.get(batch_id).total == 1


def test_a_requeued_dead_letter_does_not_fire_again(harness: Harness) -> None:
    batch_id, results = harness.submit([item(1)])
    (run_id,) = ids(results)
    life = Life(harness.redis, run_id).start()
    assert life.lease is not None
    harness.redis.hset(keys.run(run_id), "max_attempts", "1")
    outcome = life.leases.requeue(life.lease, life.run(), error={"message": "oom"}, delay=0)
    assert outcome is RequeueResult.DEAD
    assert harness.done_entries() == [{"batch": batch_id, "type": BATCH_DONE}]
    assert DeadLetters(harness.redis).requeue(run_id)
    assert harness.record(batch_id)["left"] == "1"
    batch = harness.get(batch_id)
    assert batch.counts["queued"] == 1 and not batch.done  # open again, as the run is
    harness.succeed(run_id)
    assert harness.get(batch_id).done
    assert harness.done_entries() == [{"batch": batch_id, "type": BATCH_DONE}]  # still the one


def test_a_dead_letter_requeued_before_the_rest_ended_keeps_the_batch_open(harness: Harness) -> None:
    batch_id, results = harness.submit([item(1), item(2)])
    a, b = ids(results)
    life = Life(harness.redis, a).start()
    assert life.lease is not None
    harness.redis.hset(keys.run(a), "max_attempts", "1")
    assert life.leases.requeue(life.lease, life.run(), error={}, delay=0) is RequeueResult.DEAD
    assert DeadLetters(harness.redis).requeue(a)
    harness.succeed(b)
    assert harness.done_entries() == []  # a is queued again
    harness.succeed(a)
    assert harness.done_entries() == [{"batch": batch_id, "type": BATCH_DONE}]


def test_a_retry_is_not_an_end(harness: Harness) -> None:
    batch_id, results = harness.submit([item(1)])
    (run_id,) = ids(results)
    life = Life(harness.redis, run_id).start()
    assert life.lease is not None
    assert life.leases.requeue(life.lease, life.run(), error={}, delay=0) is RequeueResult.RETRYING
    assert harness.record(batch_id)["left"] == "1" and harness.done_entries() == []
    harness.succeed(run_id)
    assert harness.done_entries() == [{"batch": batch_id, "type": BATCH_DONE}]


def test_a_running_run_canceled_ends_when_its_worker_ends_it(harness: Harness) -> None:
    batch_id, results = harness.submit([item(1)])
    (run_id,) = ids(results)
    life = Life(harness.redis, run_id).start()
    assert harness.cancel(run_id) is CancelResult.CANCELING
    assert harness.done_entries() == []
    assert life.lease is not None
    assert life.leases.complete(life.lease, life.run(), RunStatus.CANCELED, error={"type": "canceled"})
    assert harness.done_entries() == [{"batch": batch_id, "type": BATCH_DONE}]
    assert harness.get(batch_id).counts["canceled"] == 1


def test_a_run_whose_batch_is_gone_ends_quietly(harness: Harness) -> None:
    batch_id, results = harness.submit([item(1)])
    harness.redis.delete(keys.batch(batch_id))
    (run_id,) = ids(results)
    assert harness.cancel(run_id) is CancelResult.CANCELED
    assert not harness.redis.exists(keys.batch(batch_id))  # not brought back by the count
    assert harness.done_entries() == []


def test_batches_are_counted_apart(harness: Harness) -> None:
    one, first = harness.submit([item(1), item(2)])
    two, second = harness.submit([item(3)])
    harness.cancel(ids(second)[0])
    assert harness.done_entries() == [{"batch": two, "type": BATCH_DONE}]
    assert harness.get(one).counts["queued"] == 2
    for run_id in ids(first):
        harness.cancel(run_id)
    assert [e["batch"] for e in harness.done_entries()] == [two, one]


def test_refused_items_leave_nothing(harness: Harness) -> None:
    batch_id, results = harness.submit([item(1, workflow="nope")])
    assert isinstance(results[0], DispatchError)
    with pytest.raises(BatchNotFound):  # a batch that made no run is dropped
        harness.get(batch_id)
    assert harness.store.run_ids(batch_id) == []
