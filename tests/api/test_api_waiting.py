"""dispatcher.waiting.wait_for_run: woken by the done channel, bounded by its timeout."""

from __future__ import annotations

import threading
import time

from fastapi import FastAPI

from dispatcher import keys
from dispatcher.connections import Connections
from dispatcher.runs import RunStatus, RunStore, new_run
from dispatcher.waiting import wait_for_run
from tests.api.helpers import TestClient, assert_problem, finish_run


def queued_run(conns: Connections) -> str:
    run = new_run("invert", {})
    conns.text.hset(keys.run(run.id), mapping=run.to_redis())  # type: ignore[arg-type]
    return run.id


def test_unknown_run_is_none(fake_conns: Connections) -> None:
    assert wait_for_run(fake_conns.text, RunStore(fake_conns.text), "nope", 5) is None


def test_already_finished_run_returns_at_once(fake_conns: Connections) -> None:
    run_id = queued_run(fake_conns)
    finish_run(fake_conns, run_id)
    started = time.monotonic()
    run = wait_for_run(fake_conns.text, RunStore(fake_conns.text), run_id, 5)
    assert run is not None and run.status is RunStatus.SUCCEEDED
    assert time.monotonic() - started < 1


def test_wakes_on_the_done_message(fake_conns: Connections) -> None:
    run_id = queued_run(fake_conns)
    finisher = threading.Timer(0.2, finish_run, (fake_conns, run_id))
    finisher.start()
    started = time.monotonic()
    try:
        run = wait_for_run(fake_conns.text, RunStore(fake_conns.text), run_id, 10)
    finally:
        finisher.join()
    assert run is not None and run.status is RunStatus.SUCCEEDED
    assert time.monotonic() - started < 5


def test_times_out_with_the_run_as_it_is(fake_conns: Connections) -> None:
    run_id = queued_run(fake_conns)
    started = time.monotonic()
    run = wait_for_run(fake_conns.text, RunStore(fake_conns.text), run_id, 0.2)
    assert run is not None and run.status is RunStatus.QUEUED
    assert 0.2 <= time.monotonic() - started < 2


def test_a_message_of_another_run_does_not_wake_it(fake_conns: Connections) -> None:
    run_id, other = queued_run(fake_conns), queued_run(fake_conns)
    finisher = threading.Timer(0.1, finish_run, (fake_conns, other))
    finisher.start()
    try:
        run = wait_for_run(fake_conns.text, RunStore(fake_conns.text), run_id, 0.4)
    finally:
        finisher.join()
    assert run is not None and run.status is RunStatus.QUEUED


def test_over_the_tenants_quota_a_poll_is_a_429_and_a_submission_is_answered_at_once(
    client: TestClient, app: FastAPI
) -> None:
    """A stored run is never answered with an error: its ?wait (or its stream) is dropped, not the answer."""
    app.state.services.wait_quota.per_tenant = 0  # every wait is over the quota
    accepted = client.post("/v1/workflows/invert/runs?wait=30", json={})
    assert accepted.status_code == 202 and accepted.json()["status"] == "queued"
    streamed = client.post("/v1/workflows/invert/runs", json={"stream": True})
    assert streamed.status_code == 202 and streamed.headers["content-type"] == "application/json"
    run_id = accepted.json()["id"]
    problem = assert_problem(client.get(f"/v1/runs/{run_id}?wait=30"), 429)
    assert problem["type"].endswith("too-many-waits") and problem["retry_after"] == 1
    assert_problem(client.get(f"/v1/runs/{run_id}/events"), 429)
    assert client.get(f"/v1/runs/{run_id}").status_code == 200  # a read that does not wait is served
