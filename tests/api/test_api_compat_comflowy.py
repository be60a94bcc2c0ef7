"""Comflowy's open API (/api/open/v0/...) over our runs."""

from __future__ import annotations

import pytest

from api.compat.comflowy import comflowy_status
from dispatcher.connections import Connections
from dispatcher.runs import RunStatus, new_run
from dispatcher.storage import MemoryStore
from tests.api.helpers import Backlog, TestClient, assert_problem, finish_run, start_run, store_output


def submit(client: TestClient) -> str:
    body = {
        "workflow_id": "txt2img",
        "params": {"6::text": "glass bottle", "3::sampler_name": "euler"},
        "callback_urls": {"on_result_url": "http://example.com/cb"},
    }
    response = client.post("/api/open/v0/run", json=body)
    assert response.status_code == 200, response.text
    reply = response.json()
    assert reply["success"] is True
    run_id: str = reply["data"]["run_id"]
    return run_id


@pytest.mark.parametrize(
    ("status", "node", "progress", "expected"),
    [
        (RunStatus.QUEUED, "", 0.0, "waiting"),
        (RunStatus.RUNNING, "", 0.0, "pending"),
        (RunStatus.RUNNING, "3", 0.0, "running"),
        (RunStatus.RUNNING, "", 0.2, "running"),
        (RunStatus.SUCCEEDED, "", 1.0, "success"),
        (RunStatus.FAILED, "", 0.0, "failed"),
        (RunStatus.CANCELED, "", 0.0, "failed"),
    ],
)
def test_status_mapping(status: RunStatus, node: str, progress: float, expected: str) -> None:
    run = new_run("invert", {})
    run.status, run.node, run.progress = status, node, progress
    assert comflowy_status(run) == expected


def test_run_then_check(client: TestClient, fake_conns: Connections, store: MemoryStore, backlog: Backlog) -> None:
    run_id = submit(client)
    assert backlog.count == 1
    assert client.get(f"/v1/runs/{run_id}").json()["params"]["prompt"] == "glass bottle"
    waiting = client.post(f"/api/open/v0/check?id={run_id}").json()
    assert waiting == {"success": True, "data": {"status": "waiting", "output_images": [], "full_outputs": {}}}
    start_run(fake_conns, run_id, node="3")
    assert client.get(f"/api/open/v0/check?id={run_id}").json()["data"]["status"] == "running"
    finish_run(fake_conns, run_id, outputs=[store_output(store, run_id, "bottle.png", b"png")])
    data = client.get("/api/open/v0/check", params={"id": run_id}).json()["data"]
    url = f"http://testserver/v1/runs/{run_id}/outputs/bottle.png"
    assert data == {"status": "success", "output_images": [url], "full_outputs": {"9": {"images": [url]}}}


def test_check_takes_the_id_from_a_post_body(client: TestClient, fake_conns: Connections) -> None:
    run_id = submit(client)
    finish_run(fake_conns, run_id, status="failed", error={"message": "node 3 raised"})
    data = client.post("/api/open/v0/check", json={"id": run_id}).json()["data"]
    assert data["status"] == "failed" and data["error"] == "node 3 raised"


def test_errors_carry_success_false(client: TestClient, backlog: Backlog) -> None:
    problem = assert_problem(client.post("/api/open/v0/run", json={"params": {}}), 422)
    assert problem["success"] is False and problem["errors"][0]["param"] == "workflow_id"
    problem = assert_problem(
        client.post("/api/open/v0/run", json={"workflow_id": "txt2img", "params": {"6::nope": 1}}), 422
    )
    assert problem["success"] is False and problem["errors"][0]["param"] == "6::nope"
    assert_problem(client.post("/api/open/v0/run", json={"workflow_id": "nope"}), 404)
    assert backlog.empty
    assert assert_problem(client.get("/api/open/v0/check?id=feedbeef"), 404)["success"] is False
    assert assert_problem(client.get("/api/open/v0/check"), 422)["success"] is False


def test_auth_token(client: TestClient) -> None:
    # Auth disabled (this app): any ppt gets a token, and every request is let in anyway.
    reply = client.get("/api/open/v0/auth/token?ppt=key-123").json()
    assert reply["access_token"].startswith("cdt_") and "key-123" not in reply["access_token"]
    assert reply["token_type"] == "Bearer" and reply["expires_in"] == 3600
    problem = assert_problem(client.get("/api/open/v0/auth/token"), 422)
    assert problem["errors"][0]["param"] == "ppt"
