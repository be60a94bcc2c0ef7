"""Webhooks against a real redis-server and a real local HTTP receiver: relay, RQ queue and scheduler, signatures.

The run's life is driven through the same Lua scripts a worker uses; the relay and RQ burst workers run
in this process. Retry delays are shortened (base 0.2 s, cap 1 s); RQ's scheduler counts whole seconds.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from rq import SimpleWorker

from dispatcher.addresses import AllowList
from dispatcher.connections import Connections
from dispatcher.runs import Output, Run, RunStatus
from dispatcher.settings import Settings, load_settings
from dispatcher.webhooks import job
from dispatcher.webhooks.deliveries import Delivery, Outcome
from dispatcher.webhooks.relay import Relay
from dispatcher.webhooks.signing import verify
from dispatcher.webhooks.transport import HttpTransport
from tests.unit.dispatch_helpers import Bench
from tests.webhook_receiver import Receiver, verify_all

pytestmark = pytest.mark.redis

SETTINGS: dict[str, Any] = {
    "callback_allow": "loopback",
    "public_url": "https://api.example.com",
    "webhook_retry_base": 0.2,
    "webhook_retry_cap": 1.0,
    "webhook_retry_for": 30.0,
    "webhook_timeout": 2.0,
}


class Harness:
    def __init__(self, redis_url: str, **overrides: Any) -> None:
        self.conns = Connections.from_url(redis_url)
        self.settings: Settings = load_settings({}, redis_url=redis_url, **(SETTINGS | overrides))
        self.bench = Bench.build(self.conns, **(SETTINGS | overrides))
        self.sender = job.Sender(self.settings, self.conns)
        job.install(self.sender)
        self.relay = Relay(self.conns.text, self.sender.enqueue, public_url=self.settings.public_url, consumer="t1")
        self.relay.ensure_group()

    def secret(self, tenant: str = "default") -> str:
        return self.bench.tenants.webhook_secret(tenant)

    def submit(self, receiver: Receiver, *, progress: bool = True) -> Run:
        urls = {"on_result_url": receiver.url + "/result"}
        if progress:
            urls["on_progress_event_url"] = receiver.url + "/progress"
        return self.bench.submitter.submit("invert", {"params": {"width": 8}, "callback_urls": urls})

    def succeed(self, run: Run, files: int = 1) -> None:
        """What a worker does to a run: claim, report progress, complete with outputs."""
        self.bench.take(1)
        run = self.bench.run(run.id)
        lease = self.bench.leases.claim(run.id, "w1", run.dispatches, comfyui_url="http://10.0.0.5:8188").lease
        assert lease is not None
        self.bench.leases.update(lease, progress="0.5", node="2")
        outputs = [Output("3", f"out_{i}.png", "image/png", 10, f"{run.id}/1/out_{i}.png") for i in range(files)]
        self.bench.leases.complete(lease, run, RunStatus.SUCCEEDED, outputs=outputs)

    def pump(self) -> None:
        """Relay what is new, then let an RQ burst worker queue what is due and deliver it."""
        while self.relay.poll(block_ms=1):
            pass
        SimpleWorker([self.sender.queue], connection=self.conns.raw).work(
            burst=True, with_scheduler=True, logging_level="WARNING"
        )

    def pump_until(self, check: Any, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert time.monotonic() < deadline, "timed out pumping webhooks"
            self.pump()
            time.sleep(0.1)

    def close(self) -> None:
        self.conns.close()


@pytest.fixture
def harness(redis_url: str) -> Iterator[Harness]:
    h = Harness(redis_url)
    yield h
    h.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


def test_progress_then_one_signed_result(harness: Harness, receiver: Receiver) -> None:
    run = harness.submit(receiver)
    harness.succeed(run, files=2)
    harness.pump_until(lambda: receiver.delivered("/result"))
    harness.pump()  # nothing more to come

    verify_all(receiver.snapshot(), harness.secret())
    progress = [r.json() for r in receiver.delivered("/progress")]
    assert [(p["type"], p["payload"]["event"]) for p in progress] == [
        ("waiting", "queued"),
        ("pending", "started"),
        ("running", "progress"),
        ("message", "output"),
        ("message", "output"),
    ]
    assert all("comfyui_url" not in p["payload"] and "worker" not in p["payload"] for p in progress)
    [result] = receiver.delivered("/result")
    base = f"https://api.example.com/v1/runs/{run.id}/outputs/"
    assert result.json() == {
        "type": "success",
        "run_id": run.id,
        "output_images": [base + "out_0.png", base + "out_1.png"],
        "full_outputs": {"3": {"images": [base + "out_0.png", base + "out_1.png"]}},
    }
    assert len({r.webhook_id for r in receiver.snapshot()}) == len(receiver.snapshot()) == 6
    attempts = harness.sender.deliveries.attempts(run.id)
    assert len(attempts) == 6 and {a.outcome for a in attempts} == {Outcome.DELIVERED}
    assert harness.sender.queue.scheduled_job_registry.count == 0  # every watchdog removed


def test_a_failed_run_gives_a_failed_result(harness: Harness, receiver: Receiver) -> None:
    run = harness.submit(receiver, progress=False)
    harness.bench.take(1)
    run = harness.bench.run(run.id)
    lease = harness.bench.leases.claim(run.id, "w1", run.dispatches).lease
    assert lease is not None
    error = {"type": "execution_error", "message": "node 2 raised ValueError: bad"}
    harness.bench.leases.complete(lease, run, RunStatus.FAILED, error=error)
    harness.pump_until(lambda: receiver.delivered("/result"))
    assert receiver.snapshot("/progress") == []  # no progress URL: no progress sent
    [result] = receiver.delivered("/result")
    assert result.json() == {
        "type": "failed",
        "run_id": run.id,
        "error": "node 2 raised ValueError: bad",
        "output_images": [],
        "full_outputs": {},
    }


@pytest.mark.parametrize("outage", ["503", "not listening"])
def test_a_receiver_that_fails_for_a_while_still_gets_the_result(
    harness: Harness, receiver: Receiver, outage: str
) -> None:
    if outage == "503":
        receiver.status = 503
    else:
        receiver.down()
    run = harness.submit(receiver, progress=False)
    harness.succeed(run)
    log = harness.sender.deliveries
    harness.pump_until(lambda: len(log.attempts(run.id)) >= 3)
    if outage == "503":
        receiver.status = 200
    else:
        receiver.up()
    harness.pump_until(lambda: receiver.delivered("/result"))

    attempts = log.attempts(run.id)
    assert [a.outcome for a in attempts[:-1]] == [Outcome.RETRYING] * (len(attempts) - 1)
    assert attempts[-1].outcome is Outcome.DELIVERED
    assert [a.attempt for a in attempts] == list(range(1, len(attempts) + 1))
    assert len({a.webhook_id for a in attempts}) == 1
    if outage == "503":
        assert {a.status_code for a in attempts[:-1]} == {503}
        assert {r.webhook_id for r in receiver.snapshot("/result")} == {attempts[0].webhook_id}
    else:
        assert all(a.status_code is None and a.error for a in attempts[:-1])
    for earlier, later in zip(attempts, attempts[1:], strict=False):
        assert later.at >= earlier.at + harness.settings.webhook_retry_base  # never sooner than the floor
    [result] = receiver.delivered("/result")
    verify_all([result], harness.secret())
    assert result.json()["type"] == "success"


def test_it_gives_up_after_the_time_bound(redis_url: str, receiver: Receiver) -> None:
    harness = Harness(redis_url, webhook_retry_for=2.0)
    try:
        receiver.status = 500
        run = harness.submit(receiver, progress=False)
        harness.succeed(run)
        harness.pump_until(
            lambda: any(a.outcome is Outcome.GAVE_UP for a in harness.sender.deliveries.attempts(run.id))
        )
        attempts = harness.sender.deliveries.attempts(run.id)
        assert attempts[-1].outcome is Outcome.GAVE_UP and len(attempts) >= 2
        # No retry is ever planned past the bound, and the last one is planned at it: the attempt that
        # gives up is the one that found the bound passed. (When it actually ran depends on RQ's
        # one-second scheduler and on the machine's load, so its wall-clock time is not asserted.)
        planned = [a.next_at for a in attempts[:-1]]
        assert all(at is not None and at <= attempts[0].at + 2.0 for at in planned)
        assert planned[-1] == max(p for p in planned if p is not None)
        assert harness.sender.queue.scheduled_job_registry.count == 0
    finally:
        harness.close()


def test_entries_of_a_dead_relay_are_claimed_by_another(harness: Harness, receiver: Receiver) -> None:
    run = harness.submit(receiver)
    # A relay reads the entry, then dies before acknowledging it.
    harness.conns.text.xreadgroup("webhooks", "dead-relay", {"cd:webhook:events": ">"}, count=10)
    relayed: list[Delivery] = []
    other = Relay(harness.conns.text, relayed.append, consumer="t2")
    assert other.poll(block_ms=1) == 0  # nothing new for the group ...
    assert other.reclaim(min_idle_ms=0) == 1  # ... but the dead relay's entry is taken over
    assert [(d.run_id, d.event) for d in relayed] == [(run.id, "queued")]
    assert other.reclaim(min_idle_ms=0) == 0  # acknowledged now


def test_an_event_relayed_twice_is_delivered_once(harness: Harness, receiver: Receiver) -> None:
    run = harness.submit(receiver, progress=False)
    harness.succeed(run)
    entries = harness.conns.text.xrange("cd:webhook:events")
    done = [fields for _, fields in entries if fields["type"] == "done"]  # type: ignore[union-attr]
    assert len(done) == 1
    harness.relay.handle(done[0])
    harness.relay.handle(done[0])  # e.g. a relay died between enqueueing and acknowledging
    harness.pump_until(lambda: receiver.delivered("/result"))
    harness.pump()
    assert len(receiver.snapshot("/result")) == 1


def test_the_address_is_checked_again_at_send_time(harness: Harness, receiver: Receiver) -> None:
    # Public when the run was submitted; the name now answers 127.0.0.1 (DNS rebinding): nothing is sent there.
    harness.sender.transport = HttpTransport(AllowList.parse(""), resolve=lambda host, port: ["127.0.0.1"])
    delivery = Delivery("msg_x_1-0", "x", "default", "done", f"http://hooks.test:{receiver.port}/r", "{}", time.time())
    record = harness.sender.attempt(delivery)
    assert record is not None and record.outcome is Outcome.RETRYING and record.status_code is None
    assert record.error is not None and "127.0.0.1" in record.error
    assert receiver.snapshot() == []


def test_signatures_verify_with_the_tenants_secret_only(harness: Harness, receiver: Receiver) -> None:
    run = harness.submit(receiver, progress=False)
    harness.succeed(run)
    harness.pump_until(lambda: receiver.delivered("/result"))
    [result] = receiver.delivered("/result")
    assert verify(harness.secret(), result.headers, result.body, now=time.time())
    with pytest.raises(Exception, match="no matching"):
        verify(harness.bench.tenants.webhook_secret("other"), result.headers, result.body, now=time.time())
