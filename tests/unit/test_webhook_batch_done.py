"""The relay's ``batch.done`` entries: a delivery to the batch's ``on_batch_done_url`` with its counts, on fakeredis."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dispatcher import keys
from dispatcher.batches import BATCH_DONE, Batch, BatchStore, new_batch_id
from dispatcher.cancel import Canceller
from dispatcher.connections import Connections
from dispatcher.runs import RunStatus
from dispatcher.webhooks.deliveries import Delivery
from dispatcher.webhooks.payloads import batch_payload, encode
from dispatcher.webhooks.relay import Relay
from tests.events_helpers import Life
from tests.unit.dispatch_helpers import Bench

DONE_URL = "https://hooks.example.com/batch-done"
NOW = 1_760_000_000.0


@pytest.fixture
def bench(fake_conns: Connections) -> Bench:
    return Bench.build(fake_conns)


@pytest.fixture
def sent() -> list[Delivery]:
    return []


@pytest.fixture
def relay(fake_conns: Connections, sent: list[Delivery]) -> Relay:
    return Relay(fake_conns.text, sent.append, consumer="t1", clock=lambda: NOW)


def batch_of(
    bench: Bench, count: int, *, tenant: str = "acme", done_url: str | None = DONE_URL
) -> tuple[str, list[str]]:
    store = BatchStore(bench.conns.text, ttl_seconds=bench.settings.run_ttl_seconds)
    batch_id = new_batch_id()
    store.open(batch_id, tenant, done_url)
    items = [("invert", {"params": {"width": 8, "height": 8, "color": i}}, None) for i in range(count)]
    results = bench.submitter.accept_many(items, tenant=tenant, batch_id=batch_id)
    store.seal(batch_id)
    return batch_id, [r.run.id for r in results]  # type: ignore[union-attr]


def batch_entries(bench: Bench) -> list[dict[str, str]]:
    return [fields for _, fields in bench.conns.text.xrange(keys.WEBHOOK_EVENTS) if "batch" in fields]


# -- the payload (pure) -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("batch", "expected"),
    [
        (
            Batch("b_1", "acme", 1.0, 3, DONE_URL, {"succeeded": 2, "failed": 1}, 12.34567),
            {
                "type": "batch.done",
                "batch_id": "b_1",
                "total": 3,
                "counts": {"succeeded": 2, "failed": 1},
                "gpu_seconds": 12.346,
            },
        ),
        (
            Batch("b_2", "acme", 1.0, 0),
            {"type": "batch.done", "batch_id": "b_2", "total": 0, "counts": {}, "gpu_seconds": 0.0},
        ),
    ],
)
def test_batch_payload(batch: Batch, expected: dict[str, Any]) -> None:
    assert batch_payload(batch) == expected
    assert batch_payload(batch)["counts"] is not batch.counts  # a copy: the payload never changes the batch


# -- the relay --------------------------------------------------------------------------------------------------------


def test_batch_done_becomes_a_delivery_to_its_url(bench: Bench, relay: Relay, sent: list[Delivery]) -> None:
    batch_id, run_ids = batch_of(bench, 3)
    canceller = Canceller(bench.conns.text, run_ttl_seconds=60)
    life = Life(bench.conns.text, run_ids[0]).start()
    assert life.lease is not None
    assert life.leases.complete(life.lease, life.run(), RunStatus.SUCCEEDED, gpu_seconds=1.25)
    Life(bench.conns.text, run_ids[1]).start().fail("boom")
    canceller.cancel(bench.run(run_ids[2]))
    (entry,) = batch_entries(bench)

    delivery = relay.handle(entry)

    assert delivery is not None and sent == [delivery]
    assert delivery.url == DONE_URL
    assert delivery.event == BATCH_DONE == "batch.done"
    assert delivery.webhook_id == f"msg_{batch_id}_done"
    assert delivery.run_id == batch_id and delivery.tenant == "acme"
    assert delivery.first_at == NOW and delivery.attempt == 1
    body = json.loads(delivery.body)
    assert body == {
        "type": "batch.done",
        "batch_id": batch_id,
        "total": 3,
        "counts": {"queued": 0, "running": 0, "succeeded": 1, "failed": 1, "canceled": 1},
        "gpu_seconds": 1.25,
    }
    assert delivery.body == encode(body).decode()  # compact: the exact bytes signed


def test_relaying_it_again_sends_the_same_message(bench: Bench, relay: Relay, sent: list[Delivery]) -> None:
    batch_id, run_ids = batch_of(bench, 1)
    Canceller(bench.conns.text, run_ttl_seconds=60).cancel(bench.run(run_ids[0]))
    (entry,) = batch_entries(bench)
    first, again = relay.handle(entry), relay.handle(entry)
    assert first == again and len(sent) == 2  # same id, same body: the sender's fence makes it one


def test_a_batch_that_is_gone_sends_nothing(bench: Bench, relay: Relay, sent: list[Delivery]) -> None:
    batch_id, run_ids = batch_of(bench, 1)
    Canceller(bench.conns.text, run_ttl_seconds=60).cancel(bench.run(run_ids[0]))
    (entry,) = batch_entries(bench)
    bench.conns.text.delete(keys.batch(batch_id))
    assert relay.handle(entry) is None
    assert relay.handle({"batch": "b_" + "0" * 24, "type": BATCH_DONE}) is None
    assert sent == []


def test_a_batch_without_a_url_sends_nothing(bench: Bench, relay: Relay, sent: list[Delivery]) -> None:
    batch_id, _ = batch_of(bench, 1, done_url=None)
    assert relay.handle({"batch": batch_id, "type": BATCH_DONE}) is None
    assert sent == []


def test_the_relay_reads_batch_entries_from_the_stream(bench: Bench, relay: Relay, sent: list[Delivery]) -> None:
    relay.ensure_group()
    batch_id, run_ids = batch_of(bench, 2)
    for run_id in run_ids:
        Canceller(bench.conns.text, run_ttl_seconds=60).cancel(bench.run(run_id))
    assert relay.poll(block_ms=10) == 1
    assert [d.webhook_id for d in sent] == [f"msg_{batch_id}_done"]
    pending = bench.conns.text.xpending(keys.WEBHOOK_EVENTS, keys.WEBHOOK_GROUP)
    assert pending["pending"] == 0  # acknowledged once enqueued
