"""The fleet's view an API process caches: read again twice a second, and used a little longer while a newer one is
being read off the request path."""

from __future__ import annotations

import time

import pytest

from dispatcher.connections import Connections
from dispatcher.fleet import WorkerInfo
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


def test_refresh_prepares_the_new_view_before_anyone_gets_it(
    fake_conns: Connections, reads: list[list[WorkerInfo]]
) -> None:
    handout = Handout(load_settings({}), fake_conns)
    old = handout.workers()
    seen: list[tuple[list[WorkerInfo], list[WorkerInfo]]] = []
    new = handout.refresh(lambda workers: seen.append((workers, handout.workers())))
    assert seen == [(new, old)] and seen[0][0] is new and seen[0][1] is old
    assert handout.workers() is new and handout.view_fresh()
