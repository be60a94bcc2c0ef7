"""The dispatch script: priority, round-robin fairness, per-tenant limits, capacity, backoffs."""

from __future__ import annotations

import pytest

from dispatcher import keys
from dispatcher.connections import Connections
from dispatcher.errors import QueueFull
from tests.unit.dispatch_helpers import Bench


@pytest.fixture
def bench(fake_conns: Connections) -> Bench:
    return Bench.build(fake_conns)


def test_takes_only_as_many_as_ready_workers_have_room_for(bench: Bench) -> None:
    ids = [bench.submit().id for _ in range(5)]
    assert [r for r, _ in bench.take(2)] == ids[:2]
    assert bench.take(2) == []  # both workers have a run in flight
    assert [r for r, _ in bench.take(3)] == ids[2:3]
    assert bench.runs.queue_depths()["normal"] == 2


def test_strict_priority(bench: Bench) -> None:
    low = [bench.submit(priority="low").id for _ in range(3)]
    high = [bench.submit(priority="high").id for _ in range(3)]
    normal = [bench.submit(priority="normal").id for _ in range(3)]
    assert [r for r, _ in bench.take(9)] == high + normal + low


def test_round_robin_between_tenants_within_a_priority(bench: Bench) -> None:
    big = [bench.submit(tenant="big").id for _ in range(6)]
    small = [bench.submit(tenant="small").id for _ in range(2)]
    order = [r for r, _ in bench.take(8)]
    assert order[:4] == [big[0], small[0], big[1], small[1]]
    assert order[4:] == big[2:]


def test_max_running_holds_a_tenant_back_and_lets_others_through(bench: Bench) -> None:
    bench.tenants.set("capped", max_running=1)
    capped = [bench.submit(tenant="capped").id for _ in range(3)]
    other = [bench.submit(tenant="other").id for _ in range(3)]
    first = [r for r, _ in bench.take(4)]
    assert first == [capped[0], other[0], other[1], other[2]]
    # the capped tenant's run ends: its next one may go
    run = bench.run(capped[0])
    claim = bench.leases.claim(run.id, "w", run.dispatches)
    assert claim.lease is not None
    assert bench.leases.complete(claim.lease, run, "succeeded")
    assert [r for r, _ in bench.take(5)] == [capped[1]]


def test_dispatch_rate_is_a_leaky_bucket(bench: Bench) -> None:
    bench.tenants.set("slow", dispatch_rate=0.5)  # one run every 2 s, burst of one
    slow = [bench.submit(tenant="slow").id for _ in range(3)]
    taken = bench.dispatcher.take(10)
    assert [d.run_id for d in taken.runs] == slow[:1]
    assert taken.wait is not None and 1.5 < taken.wait <= 2.0


def test_each_dispatch_gets_a_new_number(bench: Bench) -> None:
    run_id = bench.submit().id
    ((taken, dispatch),) = bench.take(1)
    assert (taken, dispatch) == (run_id, 1)
    assert bench.run(run_id).dispatches == 1
    assert bench.conns.text.zscore(keys.INFLIGHT, run_id) is not None


def test_a_tenant_over_max_queued_is_refused_and_nothing_is_stored(bench: Bench) -> None:
    bench.tenants.set("tiny", max_queued=2)
    bench.submit(tenant="tiny")
    bench.submit(tenant="tiny", priority="high")
    with pytest.raises(QueueFull):
        bench.submit(tenant="tiny", priority="low")
    assert sum(bench.runs.queue_depths().values()) == 2
    bench.take(1)  # one leaves the queue: room again
    bench.submit(tenant="tiny")


def test_queue_position_counts_priorities_and_turns(bench: Bench) -> None:
    bench.submit(priority="high")
    mine = [bench.submit(tenant="a").id for _ in range(3)]
    bench.submit(tenant="b")
    positions = [bench.runs.queue_position(bench.run(r)) for r in mine]
    assert positions == [1, 3, 4]  # dispatch order: high, a0, b0, a1, a2
    order = [r for r, _ in bench.take(5)]
    assert [order.index(r) for r in mine] == positions
