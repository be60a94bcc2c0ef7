"""The fleet's view an API process caches: read again twice a second, and used a little longer while a newer one is
being read off the request path."""

from __future__ import annotations

import time

import pytest

from dispatcher.connections import Connections
from dispatcher.fleet import WorkerInfo
from dispatcher.routing.store import CapabilityStore, FleetCapabilities
from dispatcher.scheduling import handout as handout_module
from dispatcher.scheduling.handout import SLOTS_MAX_AGE, STALE_MAX_AGE, Handout
from dispatcher.settings import load_settings


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[list[WorkerInfo]]:
    """Every list of workers read from Redis, in order."""
    done: list[list[WorkerInfo]] = []

    def read(redis: object, *, since: float) -> list[WorkerInfo]:
        done.append([])
        return done[-1]

    monkeypatch.setattr(handout_module, "read_workers", read)
    return done


@pytest.mark.parametrize(
    ("age", "refreshing", "read"),
    [
        (0.0, False, False),
        (SLOTS_MAX_AGE - 0.05, False, False),
        (SLOTS_MAX_AGE + 0.05, False, True),
        (SLOTS_MAX_AGE + 0.05, True, False),  # a newer view is on its way: the last one serves meanwhile
        (STALE_MAX_AGE + 0.05, True, True),  # too old even so
    ],
)
def test_when_the_view_is_read_again(
    fake_conns: Connections, reads: list[list[WorkerInfo]], age: float, refreshing: bool, read: bool
) -> None:
    handout = Handout(load_settings({}), fake_conns)
    cached = handout.workers()
    handout._workers_read = time.monotonic() - age
    handout.refreshing = refreshing
    assert (handout.workers() is not cached) is read
    assert len(reads) == 1 + read


@pytest.mark.parametrize(
    ("age", "fresh", "usable"),
    [(0.0, True, True), (SLOTS_MAX_AGE - 0.05, False, True), (STALE_MAX_AGE - 0.05, False, False)],
)
def test_fresh_and_usable_keep_a_margin(fake_conns: Connections, age: float, fresh: bool, usable: bool) -> None:
    handout = Handout(load_settings({}), fake_conns)
    assert not handout.view_fresh() and not handout.view_usable()  # never read
    handout.workers()
    handout._workers_read = time.monotonic() - age
    assert (handout.view_fresh(), handout.view_usable()) == (fresh, usable)


@pytest.mark.parametrize("how", ["refresh", "workers"])
def test_every_new_list_goes_to_on_read_before_anyone_gets_it(
    fake_conns: Connections, reads: list[list[WorkerInfo]], how: str
) -> None:
    handout = Handout(load_settings({}), fake_conns)
    old = handout.workers()
    seen: list[tuple[list[WorkerInfo], list[WorkerInfo]]] = []
    handout.on_read = lambda workers: seen.append((workers, handout._workers))
    handout._workers_read = time.monotonic() - SLOTS_MAX_AGE
    new = handout.refresh() if how == "refresh" else handout.workers()
    assert len(seen) == 1 and seen[0][0] is new and seen[0][1] is old
    assert handout.workers() is new and handout.view_fresh()


def test_what_the_fleet_can_run_is_derived_once_per_list_and_never_after_a_read(
    fake_conns: Connections, reads: list[list[WorkerInfo]], monkeypatch: pytest.MonkeyPatch
) -> None:
    handout = Handout(load_settings({}), fake_conns)
    fleet = FleetCapabilities(CapabilityStore(fake_conns.text, ttl_seconds=30), handout.workers)
    handout.on_read = fleet.prepare
    derived: list[int] = []
    get_many = fleet.store.get_many
    monkeypatch.setattr(fleet.store, "get_many", lambda digests: derived.append(1) or get_many(digests))
    handout.refresh()
    first = handout.workers()
    fleet.loaders(), fleet.sets()
    assert len(derived) == 1  # by the read, not by the checks after it
    # A list derived in a thread before its reader publishes it: the published one is still known.
    fleet.prepare([])
    assert handout.workers() is first and fleet.loaders() is not None and len(derived) == 2
