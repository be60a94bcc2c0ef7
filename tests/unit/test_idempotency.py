"""Idempotency keys: the same key and body give the first run; another body is a conflict; concurrent sends make one."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from redis import Redis

from dispatcher import idempotency, keys
from dispatcher.connections import Connections
from dispatcher.errors import Conflict, ParameterError, QueueFull
from dispatcher.idempotency import fingerprint, parse_key
from dispatcher.runs import RunStatus
from dispatcher.settings import load_settings
from dispatcher.submit import Submitter
from dispatcher.workflows import Registry
from tests.events_helpers import Life
from tests.unit.dispatch_helpers import Bench

BODY: dict[str, Any] = {"params": {"width": 8, "height": 8}}


@pytest.fixture
def bench(fake_conns: Connections) -> Bench:
    return Bench.build(fake_conns)


def records(redis: Redis) -> int:
    names: list[str] = redis.keys(keys.run("*"))  # type: ignore[assignment]
    return sum(1 for name in names if name.count(":") == keys.run("x").count(":"))


@pytest.mark.parametrize("value", ["a", "batch-2024-01-01/line-17", "x" * 255, "550e8400-e29b-41d4-a716-446655440000"])
def test_keys_are_visible_ascii_up_to_255(value: str) -> None:
    assert parse_key(value) == value


@pytest.mark.parametrize("value", [None, ""])
def test_no_key(value: str | None) -> None:
    assert parse_key(value) is None


@pytest.mark.parametrize("value", ["has space", "x" * 256, "é", "tab\t", "line\n"])
def test_malformed_keys_are_a_parameter_error_naming_the_header(value: str) -> None:
    with pytest.raises(ParameterError, match="Idempotency-Key"):
        parse_key(value)


def test_the_fingerprint_ignores_key_order_and_spacing_but_not_values() -> None:
    a = fingerprint("invert", {"params": {"width": 8, "height": 9}, "priority": "high"})
    assert a == fingerprint("invert", {"priority": "high", "params": {"height": 9, "width": 8}})
    assert a != fingerprint("invert", {"params": {"width": 8, "height": 10}, "priority": "high"})
    assert a != fingerprint("blur-slow", {"params": {"width": 8, "height": 9}, "priority": "high"})
    # how the answer comes (JSON or an event stream) does not make another request
    assert a == fingerprint("invert", {"params": {"width": 8, "height": 9}, "priority": "high", "stream": True})


def test_the_same_key_and_body_give_the_first_run(bench: Bench) -> None:
    first = bench.submitter.accept("invert", BODY, idempotency_key="k1")
    again = bench.submitter.accept("invert", dict(reversed(list(BODY.items()))), idempotency_key="k1")
    assert not first.replayed and again.replayed
    assert again.run.id == first.run.id
    assert records(bench.conns.text) == 1
    assert bench.take(10) == [(first.run.id, 1)]
    ttl = bench.conns.text.ttl(idempotency.redis_key("default", "k1"))
    assert bench.settings.idempotency_ttl - 5 < ttl <= bench.settings.idempotency_ttl == 86400


def test_a_replay_shows_the_first_run_as_it_is_now(bench: Bench) -> None:
    first = bench.submitter.accept("invert", BODY, idempotency_key="k1").run
    Life(bench.conns.text, first.id).whole()
    again = bench.submitter.accept("invert", BODY, idempotency_key="k1")
    assert again.replayed and again.run.status is RunStatus.SUCCEEDED


def test_the_same_key_with_another_body_is_a_conflict_naming_it(bench: Bench) -> None:
    bench.submitter.accept("blur-slow", {}, idempotency_key="k0")
    first = bench.submitter.accept("invert", BODY, idempotency_key="k1").run
    with pytest.raises(Conflict, match="'k1'") as raised:
        bench.submitter.accept("invert", {"params": {"width": 9}}, idempotency_key="k1")
    assert first.id in str(raised.value)
    with pytest.raises(Conflict):
        bench.submitter.accept("blur-slow", {}, idempotency_key="k1")  # another workflow: another request
    with pytest.raises(Conflict):
        bench.submitter.accept("invert", {}, idempotency_key="k0")
    assert records(bench.conns.text) == 2


def test_keys_belong_to_their_tenant(bench: Bench) -> None:
    acme = bench.submitter.accept("invert", BODY, tenant="acme", idempotency_key="k1")
    other = bench.submitter.accept("invert", BODY, tenant="other", idempotency_key="k1")
    assert not other.replayed and other.run.id != acme.run.id


def test_without_a_key_every_send_is_a_new_run(bench: Bench) -> None:
    assert bench.submitter.submit("invert", BODY).id != bench.submitter.submit("invert", BODY).id


def test_a_key_whose_run_has_gone_is_free_again(bench: Bench) -> None:
    first = bench.submitter.accept("invert", BODY, idempotency_key="k1").run
    bench.conns.text.delete(keys.run(first.id))
    again = bench.submitter.accept("invert", {"params": {"width": 9}}, idempotency_key="k1")
    assert not again.replayed and again.run.id != first.id


def test_a_replay_is_answered_even_when_the_queue_is_full_and_a_refused_run_keeps_no_key(bench: Bench) -> None:
    bench.tenants.set("acme", max_queued=1)
    first = bench.submitter.accept("invert", BODY, tenant="acme", idempotency_key="k1").run
    assert bench.submitter.accept("invert", BODY, tenant="acme", idempotency_key="k1").run.id == first.id
    with pytest.raises(QueueFull):
        bench.submitter.accept("invert", BODY, tenant="acme", idempotency_key="k2")
    assert bench.conns.text.get(idempotency.redis_key("acme", "k2")) is None


def test_a_cache_hit_keeps_and_honours_the_key(bench: Bench) -> None:
    first = bench.submitter.accept("invert", BODY | {"cache": True}).run
    Life(bench.conns.text, first.id).whole()
    hit = bench.submitter.accept("invert", BODY | {"cache": True}, idempotency_key="k1")
    assert hit.run.status is RunStatus.SUCCEEDED and not hit.replayed
    again = bench.submitter.accept("invert", BODY | {"cache": True}, idempotency_key="k1")
    assert again.replayed and again.run.id == hit.run.id
    with pytest.raises(Conflict):
        bench.submitter.accept("invert", BODY, idempotency_key="k1")


@pytest.mark.redis
def test_one_key_sent_many_times_at_once_makes_one_run(redis_url: str) -> None:
    settings = load_settings({}, redis_url=redis_url)
    conns = Connections.from_url(redis_url)
    try:
        submitter = Submitter(conns.text, Registry.load(settings.workflows_dir), settings)
        start = threading.Barrier(16)

        def send(_: int) -> str:
            start.wait()  # all threads race into the script at once
            return submitter.accept("invert", BODY, idempotency_key="batch-1/line-1").run.id

        with ThreadPoolExecutor(16) as pool:
            ids = set(pool.map(send, range(16)))
        assert len(ids) == 1
        assert records(conns.text) == 1
    finally:
        conns.close()
