"""One delivery attempt (fakeredis, the in-memory transport): signing, recording, scheduling the next one."""

from __future__ import annotations

import json
from collections.abc import Mapping

import pytest
from rq.job import Job

from dispatcher import keys
from dispatcher.connections import Connections
from dispatcher.settings import load_settings
from dispatcher.tenants import TenantStore
from dispatcher.webhooks.deliveries import Delivery, Outcome
from dispatcher.webhooks.job import Sender
from dispatcher.webhooks.signing import generate_secret, verify
from dispatcher.webhooks.transport import MemoryTransport, SendFailed

NOW = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def transport() -> MemoryTransport:
    return MemoryTransport()


@pytest.fixture
def sender(fake_conns: Connections, transport: MemoryTransport, clock: Clock) -> Sender:
    settings = load_settings({}, webhook_retry_base=2, webhook_retry_cap=60, webhook_retry_for=600, webhook_timeout=5)
    return Sender(settings, fake_conns, transport=transport, clock=clock)


def delivery(**changes: object) -> Delivery:
    base = Delivery(
        webhook_id="msg_r1_1-0",
        run_id="r1",
        tenant="acme",
        event="done",
        url="https://hooks.example.com/result",
        body='{"type":"success","run_id":"r1","output_images":[],"full_outputs":{}}',
        first_at=NOW,
    )
    return Delivery.from_dict(base.to_dict() | changes)


def scheduled(sender: Sender) -> dict[str, float]:
    registry = sender.queue.scheduled_job_registry
    entries = sender.conns.raw.zrange(registry.key, 0, -1, withscores=True)
    return {name.decode(): score for name, score in entries}  # type: ignore[union-attr]


def test_a_2xx_is_delivered_signed_with_the_tenant_secret(sender: Sender, transport: MemoryTransport) -> None:
    record = sender.attempt(delivery())
    assert record is not None and record.outcome is Outcome.DELIVERED and record.status_code == 200
    [sent] = transport.sent
    secret = TenantStore(sender.conns.text, sender.settings).webhook_secret("acme")  # generated on first need
    assert secret.startswith("whsec_")
    assert verify(secret, sent.headers, sent.body, now=NOW) == "msg_r1_1-0"
    assert sent.headers["Content-Type"] == "application/json"
    assert sent.body == delivery().body.encode()
    assert scheduled(sender) == {}  # the watchdog is gone
    assert not sender.conns.raw.exists(Job.key_for("msg_r1_1-0-a2"))
    assert sender.deliveries.state("msg_r1_1-0") == "delivered"
    assert [a.outcome for a in sender.deliveries.attempts("r1")] == [Outcome.DELIVERED]


def test_each_attempt_is_made_once(sender: Sender, transport: MemoryTransport) -> None:
    assert sender.attempt(delivery()) is not None
    assert sender.attempt(delivery()) is None  # RQ ran the same job twice
    assert sender.attempt(delivery(attempt=2)) is None  # a watchdog that slipped through: already delivered
    assert len(transport.sent) == 1


def test_a_failure_schedules_the_next_attempt(sender: Sender, transport: MemoryTransport, clock: Clock) -> None:
    transport.answers = [503, SendFailed("ConnectionError: refused")]
    first = sender.attempt(delivery())
    assert first is not None and first.outcome is Outcome.RETRYING
    assert (first.status_code, first.error) == (503, "HTTP 503")
    assert first.next_at is not None and NOW + 2 <= first.next_at <= NOW + 4
    # The watchdog scheduled before sending was moved to the planned time.
    assert scheduled(sender) == {"msg_r1_1-0-a2": pytest.approx(float(int(first.next_at) + 1), abs=1)}
    job = Job.fetch("msg_r1_1-0-a2", connection=sender.conns.raw)
    assert job.args == (delivery(attempt=2).to_dict(),)

    clock.now = first.next_at
    sender.queue.scheduled_job_registry.remove(job.id)  # as RQ's scheduler does when it queues the job
    second = sender.attempt(Delivery.from_dict(job.args[0]))
    assert second is not None and second.outcome is Outcome.RETRYING
    assert (second.status_code, second.error) == (None, "ConnectionError: refused")
    assert set(scheduled(sender)) == {"msg_r1_1-0-a3"}
    sender.queue.scheduled_job_registry.remove("msg_r1_1-0-a3")
    third = sender.attempt(delivery(attempt=3))
    assert third is not None and third.outcome is Outcome.DELIVERED
    assert scheduled(sender) == {}
    # Every attempt: same webhook-id, a fresh timestamp and signature.
    assert {s.headers["webhook-id"] for s in transport.sent} == {"msg_r1_1-0"}
    assert [a.attempt for a in sender.deliveries.attempts("r1")] == [1, 2, 3]


def test_the_next_attempt_is_scheduled_before_sending(sender: Sender) -> None:
    seen: list[dict[str, float]] = []

    class Watching(MemoryTransport):
        def post(self, url: str, headers: Mapping[str, str], body: bytes, *, timeout: float) -> int:
            seen.append(scheduled(sender))  # if we died now, this attempt would still come
            return 200

    sender.transport = Watching()
    sender.attempt(delivery())
    [before] = seen
    assert list(before) == ["msg_r1_1-0-a2"]
    assert before["msg_r1_1-0-a2"] >= NOW + sender.grace


def test_past_the_bound_it_gives_up(sender: Sender, transport: MemoryTransport, clock: Clock) -> None:
    transport.answers = [500]
    clock.now = NOW + 600
    record = sender.attempt(delivery(attempt=9))
    assert record is not None and record.outcome is Outcome.GAVE_UP and record.next_at is None
    assert scheduled(sender) == {}
    assert sender.deliveries.state("msg_r1_1-0") == "gave_up"
    assert sender.attempt(delivery(attempt=10)) is None


def test_a_rotated_secret_applies_to_the_next_attempt(sender: Sender, transport: MemoryTransport) -> None:
    tenants = TenantStore(sender.conns.text, sender.settings)
    first, second = generate_secret(), generate_secret()
    tenants.set("acme", webhook_secret=first)
    transport.answers = [503]
    sender.attempt(delivery())
    tenants.set("acme", webhook_secret=second)
    sender.attempt(delivery(attempt=2))
    assert verify(first, transport.sent[0].headers, transport.sent[0].body, now=NOW)
    assert verify(second, transport.sent[1].headers, transport.sent[1].body, now=NOW)


def test_attempt_records_are_capped_and_expire(sender: Sender) -> None:
    sender.attempt(delivery())
    listed = keys.run_deliveries("r1")
    assert 0 < sender.conns.text.ttl(listed) <= sender.settings.run_ttl_seconds
    assert json.loads(sender.conns.text.lindex(listed, 0))["webhook_id"] == "msg_r1_1-0"  # type: ignore[arg-type]
