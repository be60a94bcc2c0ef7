from __future__ import annotations

import json
import time

import pytest

from dispatcher import keys
from dispatcher.connections import Connections
from dispatcher.lease import ClaimResult, Lease, Leases
from dispatcher.runs import Output, RunStatus, RunStore, new_run


@pytest.fixture
def leases(fake_conns: Connections) -> Leases:
    return Leases(fake_conns.text, ttl_seconds=5, run_ttl_seconds=3600)


def _queued_run(conns: Connections, max_attempts: int = 3) -> str:
    run = new_run("invert", {"color": 1}, max_attempts=max_attempts)
    conns.text.hset(keys.run(run.id), mapping=run.to_redis())
    conns.text.set(keys.run_graph(run.id), json.dumps({"1": {"class_type": "X", "inputs": {}}}))
    conns.text.zadd(keys.queued(run.priority), {run.id: run.created_at})
    return run.id


def test_claim_takes_the_run_off_the_queue(fake_conns: Connections, leases: Leases) -> None:
    run_id = _queued_run(fake_conns)
    claim = leases.claim(run_id, "w1", comfyui_url="http://c")
    assert claim.result is ClaimResult.OK and claim.lease == Lease(run_id, "w1", 1)
    run = RunStore(fake_conns.text).get(run_id)
    assert run is not None and run.status is RunStatus.RUNNING and run.worker == "w1" and run.attempts == 1
    assert run.comfyui_url == "http://c"
    assert RunStore(fake_conns.text).queue_depths() == {"high": 0, "normal": 0, "low": 0}


def test_a_second_delivery_finds_the_lease_taken(fake_conns: Connections, leases: Leases) -> None:
    run_id = _queued_run(fake_conns)
    assert leases.claim(run_id, "w1").result is ClaimResult.OK
    second = leases.claim(run_id, "w2")
    assert second.result is ClaimResult.BUSY and second.detail == "w1|1"


def test_a_finished_run_is_never_claimed_again(fake_conns: Connections, leases: Leases) -> None:
    run_id = _queued_run(fake_conns)
    lease = leases.claim(run_id, "w1").lease
    assert lease is not None
    out = Output("3", "a.png", "image/png", 10, f"{run_id}/1/a.png")
    assert leases.complete(lease, RunStatus.SUCCEEDED, outputs=[out])
    again = leases.claim(run_id, "w2")
    assert again.result is ClaimResult.DONE and again.detail == "succeeded"
    run = RunStore(fake_conns.text).get(run_id)
    assert run is not None and run.outputs == [out] and run.progress == 1.0 and run.finished_at
    assert fake_conns.text.ttl(keys.run(run_id)) > 0


def test_an_expired_lease_is_fenced_off(fake_conns: Connections, leases: Leases) -> None:
    run_id = _queued_run(fake_conns)
    stale = leases.claim(run_id, "w1").lease
    assert stale is not None
    fake_conns.text.delete(keys.run_lease(run_id))  # as if w1 died and its lease expired
    fresh = leases.claim(run_id, "w2").lease
    assert fresh == Lease(run_id, "w2", 2)
    assert not leases.renew(stale)
    assert not leases.update(stale, progress="0.5")
    assert not leases.complete(stale, RunStatus.FAILED, error={"message": "late"})
    assert not leases.requeue(stale, "normal", error={})
    assert leases.update(fresh, progress="0.5")
    assert leases.complete(fresh, RunStatus.SUCCEEDED)
    run = RunStore(fake_conns.text).get(run_id)
    assert run is not None and run.status is RunStatus.SUCCEEDED and run.error is None


def test_requeue_puts_the_run_back(fake_conns: Connections, leases: Leases) -> None:
    run_id = _queued_run(fake_conns)
    lease = leases.claim(run_id, "w1").lease
    assert lease is not None
    assert leases.requeue(lease, "normal", error={"type": "ComfyUIUnavailable", "message": "down"})
    store = RunStore(fake_conns.text)
    run = store.get(run_id)
    assert (
        run is not None
        and run.status is RunStatus.QUEUED
        and run.error == {"type": "ComfyUIUnavailable", "message": "down"}
    )
    assert store.queue_depths()["normal"] == 1
    assert leases.claim(run_id, "w2").lease == Lease(run_id, "w2", 2)


def test_a_run_whose_attempts_all_died_fails(fake_conns: Connections, leases: Leases) -> None:
    run_id = _queued_run(fake_conns, max_attempts=1)
    assert leases.claim(run_id, "w1").result is ClaimResult.OK
    fake_conns.text.delete(keys.run_lease(run_id))
    claim = leases.claim(run_id, "w2")
    assert claim.result is ClaimResult.EXHAUSTED
    run = RunStore(fake_conns.text).get(run_id)
    assert (
        run is not None and run.status is RunStatus.FAILED and run.error and run.error["type"] == "attempts_exhausted"
    )


def test_claim_of_an_unknown_run(leases: Leases) -> None:
    assert leases.claim("nope", "w1").result is ClaimResult.MISSING


def test_renew_extends_the_lease(fake_conns: Connections, leases: Leases) -> None:
    run_id = _queued_run(fake_conns)
    lease = leases.claim(run_id, "w1").lease
    assert lease is not None
    fake_conns.text.pexpire(keys.run_lease(run_id), 10)
    assert leases.renew(lease)
    time.sleep(0.02)
    assert fake_conns.text.get(keys.run_lease(run_id)) == "w1|1"
