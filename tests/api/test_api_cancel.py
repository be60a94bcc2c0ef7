"""POST /v1/runs/{id}/cancel: queued runs end at once; finished ones are a 409; other tenants' a 404."""

from __future__ import annotations

import threading
import time

from dispatcher import keys
from dispatcher.connections import Connections
from dispatcher.scheduling.dispatch import Dispatcher
from tests.api.helpers import TestClient, assert_problem, finish_run

BODY = {"params": {"width": 8, "height": 8}}


def test_cancel_of_a_queued_run(client: TestClient) -> None:
    run_id = client.post("/v1/workflows/invert/runs", json=BODY).json()["id"]
    reply = client.post(f"/v1/runs/{run_id}/cancel")
    assert reply.status_code == 200, reply.text
    assert reply.json()["status"] == "canceled" and reply.json()["finished_at"]
    assert client.get(f"/v1/runs/{run_id}").json()["status"] == "canceled"
    assert client.get("/v1/queues").json()["total"] == 0


def test_cancel_of_a_running_run_waits_for_its_worker(client: TestClient, fake_conns: Connections) -> None:
    run_id = client.post("/v1/workflows/invert/runs", json=BODY).json()["id"]
    Dispatcher(fake_conns.text, dispatch_rate=0, max_running=0).take(1)
    fake_conns.text.hset(keys.run(run_id), mapping={"status": "running", "worker": "w"})

    def worker() -> None:  # what the worker does on the cancel message: interrupt, then end the run
        deadline = time.monotonic() + 5
        while fake_conns.text.hget(keys.run(run_id), "cancel_requested") != "1" and time.monotonic() < deadline:
            time.sleep(0.01)
        finish_run(fake_conns, run_id, status="canceled", error={"type": "canceled"})

    thread = threading.Thread(target=worker)
    thread.start()
    reply = client.post(f"/v1/runs/{run_id}/cancel")
    thread.join()
    assert reply.status_code == 200 and reply.json()["status"] == "canceled"


def test_cancel_of_a_finished_run_is_a_conflict(client: TestClient, fake_conns: Connections) -> None:
    run_id = client.post("/v1/workflows/invert/runs", json=BODY).json()["id"]
    finish_run(fake_conns, run_id)
    assert_problem(client.post(f"/v1/runs/{run_id}/cancel"), 409)


def test_cancel_of_an_unknown_run(client: TestClient) -> None:
    assert_problem(client.post("/v1/runs/nope/cancel"), 404)
