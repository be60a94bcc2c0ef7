"""POST /v1/workflows/{id}/runs and GET /v1/runs/{id}: submitting, viewing, queue positions, waiting."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from fastapi import FastAPI

from api import operations
from dispatcher import keys
from dispatcher.connections import Connections
from dispatcher.runs import Run
from dispatcher.scheduling import handout as handout_module
from dispatcher.scheduling.handout import SLOTS_MAX_AGE
from tests.api.conftest import AfterSubmit
from tests.api.helpers import Backlog, TestClient, assert_problem, finish_run, start_run

RUN_FIELDS = {
    "id", "workflow", "workflow_version", "status", "priority", "progress", "queue_position", "params", "outputs",
    "error", "created_at", "started_at", "finished_at", "attempts", "max_attempts", "cached", "cached_from",
    "gpu_seconds", "eta_seconds", "batch_id", "waiting_for",
}  # fmt: skip


def test_submit_answers_202_with_location_and_the_queued_run(client: TestClient, backlog: Backlog) -> None:
    response = client.post("/v1/workflows/invert/runs", json={"params": {"width": 64}, "priority": "high"})
    assert response.status_code == 202
    run = response.json()
    assert set(run) == RUN_FIELDS
    assert response.headers["location"] == f"/v1/runs/{run['id']}"
    assert run["status"] == "queued"
    assert run["priority"] == "high"
    assert run["workflow"] == "invert"
    assert run["params"] == {"width": 64, "height": 512, "color": 0}
    assert run["progress"] == 0.0
    assert run["queue_position"] == 0
    assert run["outputs"] == [] and run["error"] is None
    assert run["started_at"] is None and run["finished_at"] is None
    assert run["created_at"].endswith("Z")
    datetime.fromisoformat(run["created_at"])
    assert run["attempts"] == 0 and run["max_attempts"] == 3
    assert backlog.count == 1


def test_empty_body_takes_every_default(client: TestClient) -> None:
    response = client.post("/v1/workflows/invert/runs")
    assert response.status_code == 202
    assert response.json()["params"] == {"width": 512, "height": 512, "color": 0}
    assert response.json()["priority"] == "normal"


@pytest.mark.parametrize(
    ("body", "prompt"),
    [
        ({"params": {"prompt": "a fox"}}, "a fox"),
        ({"params": {"6::text": "a node fox"}}, "a node fox"),  # Comflowy's node::input keys
        ({"prompt": "a simple fox", "target_node": "6"}, "a simple fox"),  # Flask seed, simple form
        ({"prompt": "first text node"}, "first text node"),
        ({"6": {"inputs": {"text": "an advanced fox"}}}, "an advanced fox"),  # Flask seed, advanced form
        ({"input": {"prompt": "a flowai fox"}}, "a flowai fox"),  # FlowAI's "input"
    ],
)
def test_every_parameter_form_is_accepted(client: TestClient, body: dict[str, object], prompt: str) -> None:
    response = client.post("/v1/workflows/txt2img/runs", json=body)
    assert response.status_code == 202, response.text
    assert response.json()["params"]["prompt"] == prompt


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"params": {"width": 0}}, "width"),
        ({"params": {"width": "wide"}}, "width"),
        ({"params": {"depth": 3}}, "depth"),
        ({"params": {"1::width": 99999}}, "1::width"),
        ({"priority": "urgent"}, "priority"),
        ({"colour": 1}, "colour"),
    ],
)
def test_bad_parameter_is_a_422_naming_it_and_nothing_is_queued(
    client: TestClient, fake_conns: Connections, backlog: Backlog, body: dict[str, object], param: str
) -> None:
    problem = assert_problem(client.post("/v1/workflows/invert/runs", json=body), 422)
    assert problem["errors"][0]["param"] == param
    assert problem["detail"].startswith(f"{param}: ")
    assert backlog.empty
    assert client.get("/v1/queues").json()["total"] == 0
    assert not fake_conns.text.keys(keys.run("*"))


def test_missing_required_parameter_is_a_422(client: TestClient, backlog: Backlog) -> None:
    problem = assert_problem(client.post("/v1/workflows/txt2img/runs", json={"params": {}}), 422)
    assert problem["errors"] == [{"param": "prompt", "detail": "is required"}]
    assert backlog.empty


def test_unknown_workflow_is_a_404_and_nothing_is_queued(client: TestClient, backlog: Backlog) -> None:
    assert_problem(client.post("/v1/workflows/nope/runs", json={}), 404)
    assert backlog.empty


def test_get_run_and_unknown_run(client: TestClient) -> None:
    run = client.post("/v1/workflows/invert/runs", json={}).json()
    response = client.get(f"/v1/runs/{run['id']}")
    assert response.status_code == 200
    assert response.json() == run
    assert_problem(client.get("/v1/runs/0123456789abcdef"), 404)
    # Not even a run id: unknown without touching another kind of key.
    assert_problem(client.get(f"/v1/runs/{run['id']}:graph"), 404)


def test_queue_positions_and_depths_follow_priority(client: TestClient) -> None:
    def submit(priority: str) -> str:
        run_id: str = client.post("/v1/workflows/invert/runs", json={"priority": priority}).json()["id"]
        return run_id

    low, normal1, high, normal2 = submit("low"), submit("normal"), submit("high"), submit("normal")
    positions = {
        run_id: client.get(f"/v1/runs/{run_id}").json()["queue_position"] for run_id in (low, normal1, high, normal2)
    }
    assert positions == {high: 0, normal1: 1, normal2: 2, low: 3}
    depths = {"queues": {"high": 1, "normal": 2, "low": 1}, "total": 4, "waiting_for_capability": 0}
    assert client.get("/v1/queues").json() == depths


def test_running_run_has_no_queue_position(client: TestClient, fake_conns: Connections) -> None:
    run_id = client.post("/v1/workflows/invert/runs", json={}).json()["id"]
    start_run(fake_conns, run_id, node="2", progress=0.4)
    run = client.get(f"/v1/runs/{run_id}").json()
    assert run["status"] == "running"
    assert run["queue_position"] is None
    assert run["progress"] == 0.4
    assert run["started_at"].endswith("Z")


def test_wait_answers_200_once_the_run_ends(client: TestClient, finish_after_submit: Callable[..., None]) -> None:
    finish_after_submit(files={"out.png": b"png"})
    started = time.monotonic()
    response = client.post("/v1/workflows/invert/runs?wait=10", json={})
    assert time.monotonic() - started < 5  # woken by the done channel, not by the timeout
    assert response.status_code == 200
    run = response.json()
    assert response.headers["location"] == f"/v1/runs/{run['id']}"
    assert run["status"] == "succeeded"
    assert run["finished_at"] is not None
    assert [o["filename"] for o in run["outputs"]] == ["out.png"]


def test_wait_answers_202_when_the_time_is_up(client: TestClient) -> None:
    started = time.monotonic()
    response = client.post("/v1/workflows/invert/runs?wait=0.3", json={})
    assert 0.3 <= time.monotonic() - started < 3
    assert response.status_code == 202
    assert response.json()["status"] == "queued"


@pytest.fixture
def reads(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The run ids whose records the API reads while waiting, from now on (the process's listener is up)."""
    client.post("/v1/workflows/invert/runs?wait=0.1", json={})
    seen: list[str] = []
    find = operations.find_run_async

    async def counted(svc: Any, run_id: str, who: Any) -> Any:
        seen.append(run_id)
        return await find(svc, run_id, who)

    monkeypatch.setattr(operations, "find_run_async", counted)
    return seen


def test_a_submission_that_waits_reads_no_record_before_the_run_ends(
    client: TestClient,
    finish_after_submit: Callable[..., None],
    after_submit: AfterSubmit,
    fake_conns: Connections,
    reads: list[str],
) -> None:
    """It watches for its run's end from before the run is stored: the done message is all it needs, on the
    path of every run that waits (either order: the run may end before or after the wait begins)."""
    for delay in (0.0, 0.2):
        finish_after_submit(delay=delay, files={"out.png": b"png"})
        response = client.post("/v1/workflows/invert/runs?wait=10", json={})
        assert response.status_code == 200 and response.json()["status"] == "succeeded"
    assert reads == []
    # The time up, it answers the run as it is then, not as it was stored.
    after_submit(lambda run: start_run(fake_conns, run.id, node="2", progress=0.5), 0.0)
    response = client.post("/v1/workflows/invert/runs?wait=0.5", json={})
    assert response.status_code == 202
    assert response.json()["status"] == "running" and response.json()["progress"] == 0.5
    assert reads == [response.json()["id"]]


def test_a_submission_that_waits_while_the_subscription_is_down_reads_the_record(
    client: TestClient,
    app: FastAPI,
    after_submit: AfterSubmit,
    fake_conns: Connections,
    reads: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Not listening when it began to watch, a message may be missed: it reads the record once listening."""
    waits = app.state.services.waits
    monkeypatch.setattr(waits, "_subscribed", asyncio.Event())  # as after a drop, before it is back

    def finish_then_listen(run: Run) -> None:
        finish_run(fake_conns, run.id)  # its message is sent while nobody listens...
        time.sleep(0.2)
        client.portal.call(waits._subscribed.set)  # type: ignore[union-attr]  # ...and the listener is back

    after_submit(finish_then_listen, 0.0)
    response = client.post("/v1/workflows/invert/runs?wait=10", json={})
    assert response.status_code == 200 and response.json()["status"] == "succeeded"
    assert reads == [response.json()["id"]]


def test_a_submission_that_waits_reads_the_record_after_a_drop(
    client: TestClient, app: FastAPI, after_submit: AfterSubmit, fake_conns: Connections, reads: list[str]
) -> None:
    """Back after a drop, the listener wakes every waiter to read (a message may have been lost meanwhile): once,
    then the done message ends the wait."""
    waits = app.state.services.waits

    def drop_then_finish(run: Run) -> None:
        time.sleep(0.1)
        client.portal.call(waits._wake_all)  # type: ignore[union-attr]  # as the listener does when back
        time.sleep(0.2)
        finish_run(fake_conns, run.id)

    after_submit(drop_then_finish, 0.0)
    response = client.post("/v1/workflows/invert/runs?wait=10", json={})
    assert response.status_code == 200 and response.json()["status"] == "succeeded"
    assert reads == [response.json()["id"]]


def test_a_replay_that_waits_answers_the_first_run(
    client: TestClient, finish_after_submit: Callable[..., None], reads: list[str]
) -> None:
    """Its run was stored by another request: read, not watched; ended, it is answered at once."""
    finish_after_submit(delay=0.0)
    first = client.post("/v1/workflows/invert/runs?wait=10", json={}, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == 200 and reads == []
    again = client.post("/v1/workflows/invert/runs?wait=10", json={}, headers={"Idempotency-Key": "k-1"})
    assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"] and again.json()["status"] == "succeeded"
    assert reads == [first.json()["id"]]


def test_wait_above_300_seconds_is_a_422_and_nothing_is_queued(client: TestClient, backlog: Backlog) -> None:
    problem = assert_problem(client.post("/v1/workflows/invert/runs?wait=301", json={}), 422)
    assert problem["errors"][0]["param"] == "wait"
    assert_problem(client.post("/v1/workflows/invert/runs?wait=-1", json={}), 422)
    assert backlog.empty


def test_get_run_can_wait_for_the_end(client: TestClient, fake_conns: Connections) -> None:
    run_id = client.post("/v1/workflows/invert/runs", json={}).json()["id"]
    finisher = threading.Timer(
        0.2, finish_run, (fake_conns, run_id), {"status": "failed", "error": {"message": "boom"}}
    )
    finisher.start()
    try:
        run = client.get(f"/v1/runs/{run_id}?wait=10").json()
    finally:
        finisher.join()
    assert run["status"] == "failed"
    assert run["error"] == {"message": "boom"}


# -- the fleet's view, read off the submissions' path ----------------------------------------------------------------


def test_a_stale_view_is_read_again_in_the_background_while_submissions_go_on(
    client: TestClient, app: FastAPI, backlog: Backlog, monkeypatch: pytest.MonkeyPatch
) -> None:
    handout = app.state.services.handout
    monkeypatch.setattr(handout_module, "STALE_MAX_AGE", 60.0)  # however slow this machine, the view stays usable
    release, reads = threading.Event(), []
    read_workers = handout_module.read_workers

    def slow_read(redis: Any, *, since: float) -> Any:
        reads.append(_on_event_loop())
        assert release.wait(10)
        return read_workers(redis, since=since)

    def until(done: Callable[[], bool]) -> bool:
        deadline = time.monotonic() + 5
        while not done() and time.monotonic() < deadline:
            time.sleep(0.01)
        return done()

    assert client.post("/v1/workflows/invert/runs", json={}).status_code == 202  # the workflow and the view read
    monkeypatch.setattr(handout_module, "read_workers", slow_read)
    handout._workers_read = time.monotonic() - SLOTS_MAX_AGE  # stale, still usable
    for _ in range(3):  # none waits for the read under way (it waits for release), and one read serves them all
        assert client.post("/v1/workflows/invert/runs", json={}).status_code == 202
    assert until(lambda: len(reads) == 1) and handout.refreshing
    assert reads == [False] and backlog.records == 4  # read in a thread, not on the event loop
    release.set()
    assert until(lambda: not handout.refreshing) and handout.view_fresh() and reads == [False]


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
