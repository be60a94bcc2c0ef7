"""The result cache on fakeredis: opt-in, fixed seeds only, served once the earlier run succeeded, within its TTL."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from typing import Any

import pytest

from dispatcher import cache, keys
from dispatcher.binding import bind
from dispatcher.cache import CachePlan, cached_run, is_fresh, wants_cache
from dispatcher.connections import Connections
from dispatcher.errors import ParameterError
from dispatcher.runs import Output, RunStatus, new_run
from dispatcher.settings import load_settings
from dispatcher.submit import Submitter
from dispatcher.workflows import Registry
from tests.events_helpers import Life
from tests.unit.dispatch_helpers import Bench

BODY: dict[str, Any] = {"params": {"width": 8, "height": 8, "color": 7}}

CACHE_TTL = load_settings({}).cache_ttl


@pytest.fixture
def bench(fake_conns: Connections) -> Bench:
    bench = Bench.build(fake_conns)
    invert = bench.submitter.registry.get("invert")
    seedy_graph = copy.deepcopy(invert.graph)
    seedy_graph["9"] = {"class_type": "KSampler", "inputs": {"seed": ["1", 0]}}  # a seed fed by a link: random
    registry = Registry(
        [
            replace(invert, cache=False),
            replace(invert, id="invert-cached", cache=True),
            replace(invert, id="seedy", graph=seedy_graph, cache=True),
        ]
    )
    bench.submitter = Submitter(fake_conns.text, registry, bench.settings)
    return bench


def events(bench: Bench, run_id: str) -> list[str]:
    return [fields["type"] for _, fields in bench.conns.text.xrange(keys.run_events(run_id))]


def pointers(bench: Bench) -> list[str]:
    names: list[str] = bench.conns.text.keys(f"{keys.NS}:cache:*")  # type: ignore[assignment]
    return names


def succeed(bench: Bench, run_id: str) -> None:
    Life(bench.conns.text, run_id).start().succeed("out.png")


# -- pure -------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("workflow_cache", "body", "expected"),
    [
        (False, {}, False),
        (True, {}, True),
        (False, {"cache": True}, True),
        (True, {"cache": False}, False),
        (True, {"cache": None}, True),
    ],
)
def test_the_run_or_else_its_workflow_asks_for_the_cache(
    bench: Bench, workflow_cache: bool, body: dict[str, Any], expected: bool
) -> None:
    workflow = replace(bench.submitter.registry.get("invert"), cache=workflow_cache)
    assert wants_cache(workflow, body) is expected


@pytest.mark.parametrize("value", ["yes", 1, 0, [], {}])
def test_cache_must_be_a_boolean(bench: Bench, value: Any) -> None:
    with pytest.raises(ParameterError, match="cache"):
        wants_cache(bench.submitter.registry.get("invert"), {"cache": value})


@pytest.mark.parametrize(
    ("status", "finished_ago", "fresh"),
    [
        (RunStatus.SUCCEEDED, 10.0, True),
        (RunStatus.SUCCEEDED, 300.0, True),
        (RunStatus.SUCCEEDED, 300.1, False),
        (RunStatus.FAILED, 1.0, False),
        (RunStatus.RUNNING, None, False),
        (RunStatus.SUCCEEDED, None, False),
    ],
)
def test_freshness(status: RunStatus, finished_ago: float | None, fresh: bool) -> None:
    run = new_run("invert", {})
    run.status = status
    run.finished_at = None if finished_ago is None else 1000.0 - finished_ago
    assert is_fresh(run, ttl=300.0, now=1000.0) is fresh


def test_a_hit_is_the_new_run_succeeded_with_the_earlier_outputs() -> None:
    source = new_run("invert", {})
    source.outputs = [Output("3", "a.png", "image/png", 3, "src/1/a.png")]
    hit = cached_run(new_run("invert", {"width": 8}), source, now=50.0)
    assert (hit.status, hit.progress, hit.outputs, hit.finished_at) == (RunStatus.SUCCEEDED, 1.0, source.outputs, 50.0)
    assert hit.id != source.id and hit.params == {"width": 8}


# -- through the submitter ------------------------------------------------------------------------------------------


def test_runs_that_do_not_ask_are_neither_recorded_nor_served(bench: Bench) -> None:
    first = bench.submitter.submit("invert", BODY)
    succeed(bench, first.id)
    second = bench.submitter.submit("invert", BODY)
    assert second.status is RunStatus.QUEUED
    assert pointers(bench) == []


def test_a_run_with_a_random_seed_is_never_cached(bench: Bench) -> None:
    first = bench.submitter.submit("seedy", BODY)
    succeed(bench, first.id)
    assert bench.submitter.submit("seedy", BODY).status is RunStatus.QUEUED
    assert pointers(bench) == []


def test_an_identical_run_after_a_success_is_served_without_the_scheduler(bench: Bench) -> None:
    first = bench.submitter.submit("invert-cached", BODY)
    waiting = bench.submitter.submit("invert-cached", BODY)  # before the first ended: it runs too
    assert waiting.status is RunStatus.QUEUED
    assert bench.conns.text.get(pointers(bench)[0]) == first.id  # the earlier run in flight keeps the pointer
    succeed(bench, first.id)
    bench.take(10)  # the waiting one leaves the backlog, as dispatched

    hit = bench.submitter.submit("invert-cached", BODY | {"priority": "high"})  # run options do not count
    assert hit.status is RunStatus.SUCCEEDED
    assert hit.outputs == bench.run(first.id).outputs  # the same storage keys: nothing copied, nothing ran
    assert bench.run(hit.id).cached_from == first.id
    assert bench.run(first.id).cached_from == ""
    assert events(bench, hit.id) == ["queued", "output", "done"]
    done = bench.conns.text.xrange(keys.run_events(hit.id))[-1][1]
    assert json.loads(done["data"]) == {"status": "succeeded", "cached_from": first.id}
    assert bench.take(10) == []  # never queued
    assert bench.conns.text.ttl(keys.run(hit.id)) > 0  # it ended: it expires like any ended run
    assert bench.conns.text.lindex(keys.RECENT_RUNS, 0) == hit.id


def test_the_body_may_ask_for_the_cache_and_another_body_is_another_entry(bench: Bench) -> None:
    first = bench.submitter.submit("invert", BODY | {"cache": True})
    succeed(bench, first.id)
    assert bench.submitter.submit("invert", BODY | {"cache": True}).status is RunStatus.SUCCEEDED
    other = {"params": {**BODY["params"], "color": 8}, "cache": True}
    assert bench.submitter.submit("invert", other).status is RunStatus.QUEUED
    assert bench.submitter.submit("invert", BODY).status is RunStatus.QUEUED  # without "cache": not served


def test_each_tenant_has_its_own_cache(bench: Bench) -> None:
    first = bench.submitter.submit("invert-cached", BODY, tenant="acme")
    succeed(bench, first.id)
    assert bench.submitter.submit("invert-cached", BODY, tenant="other").status is RunStatus.QUEUED
    assert bench.submitter.submit("invert-cached", BODY, tenant="acme").status is RunStatus.SUCCEEDED


def test_a_stale_or_failed_earlier_run_gives_its_place_to_the_next(
    bench: Bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = bench.submitter.submit("invert-cached", BODY)
    Life(bench.conns.text, first.id).start().fail("boom")
    second = bench.submitter.submit("invert-cached", BODY)
    assert second.status is RunStatus.QUEUED
    assert bench.conns.text.get(pointers(bench)[0]) == second.id
    succeed(bench, second.id)
    now = bench.run(second.id).finished_at
    assert now is not None
    monkeypatch.setattr(cache.time, "time", lambda: now + CACHE_TTL + 1)
    third = bench.submitter.submit("invert-cached", BODY)
    assert third.status is RunStatus.QUEUED
    assert bench.conns.text.get(pointers(bench)[0]) == third.id


def test_the_pointer_outlives_the_run_time_limit(bench: Bench) -> None:
    run = bench.submitter.submit("invert-cached", BODY | {"timeout_seconds": 100})
    ttl = bench.conns.text.ttl(pointers(bench)[0])
    assert ttl == pytest.approx(CACHE_TTL + 100 + cache.POINTER_QUEUE_ALLOWANCE, abs=2)
    assert run.status is RunStatus.QUEUED


def test_the_ttl_comes_from_settings(fake_conns: Connections) -> None:
    settings = load_settings({})
    submitter = Submitter(fake_conns.text, Registry.load(settings.workflows_dir), settings)
    assert submitter.cache.ttl == settings.cache_ttl == 300


def test_no_plan_for_a_run_that_does_not_ask(bench: Bench) -> None:
    workflow = bench.submitter.registry.get("invert")
    bound = bind(workflow, BODY, run_id="r1")
    assert bench.submitter.cache.plan(workflow, BODY, bound, tenant="t", timeout=10) == CachePlan()
