"""Idempotency-Key and the result cache through the HTTP API (fakeredis)."""

from __future__ import annotations

from typing import Any

from dispatcher.connections import Connections
from dispatcher.storage import MemoryStore
from tests.api.helpers import Backlog, TestClient, assert_problem, store_output
from tests.events_helpers import Life

RUNS = "/v1/workflows/invert/runs"
BODY: dict[str, Any] = {"params": {"width": 8, "height": 8, "color": 5}}


def post(client: TestClient, body: dict[str, Any], key: str | None = None, path: str = RUNS) -> Any:
    return client.post(path, json=body, headers={"Idempotency-Key": key} if key else {})


def test_the_same_key_and_body_answer_the_first_run_marked_replayed(client: TestClient, backlog: Backlog) -> None:
    first = post(client, BODY, "k1")
    again = post(client, BODY, "k1")
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert again.headers["Location"] == f"/v1/runs/{first.json()['id']}"
    assert backlog.count == 1 and backlog.records == 1


def test_a_replay_of_an_ended_run_is_a_200_with_the_ended_run(client: TestClient, fake_conns: Connections) -> None:
    first = post(client, BODY, "k1").json()
    Life(fake_conns.text, first["id"]).whole()
    again = post(client, BODY, "k1")
    assert again.status_code == 200 and again.json()["status"] == "succeeded"


def test_the_same_key_with_another_body_is_a_409_naming_the_key(client: TestClient, backlog: Backlog) -> None:
    post(client, BODY, "batch-7")
    problem = assert_problem(post(client, {"params": {"width": 9}}, "batch-7"), 409)
    assert "'batch-7'" in problem["detail"]
    assert backlog.records == 1


def test_a_malformed_key_is_a_422_and_nothing_is_queued(client: TestClient, backlog: Backlog) -> None:
    problem = assert_problem(post(client, BODY, "two words"), 422)
    assert problem["errors"][0]["param"] == "Idempotency-Key"
    assert backlog.empty


def test_a_batch_sent_twice_makes_each_run_once(client: TestClient, backlog: Backlog) -> None:
    lines = [{"params": {"width": 8, "height": 8, "color": i}} for i in range(20)]
    first = [post(client, body, f"file-1/line-{i}").json()["id"] for i, body in enumerate(lines)]
    again = [post(client, body, f"file-1/line-{i}") for i, body in enumerate(lines)]
    assert [r.json()["id"] for r in again] == first
    assert all(r.headers["Idempotent-Replayed"] == "true" for r in again)
    assert backlog.records == 20


def test_the_key_works_on_the_flowai_route_too(client: TestClient, backlog: Backlog) -> None:
    body = {"input": {"width": 8}, "stream": True}
    path = "/v1/api/workflow/run/invert"
    post(client, {"params": {"width": 8}}, "k1")  # a native run holds the key already
    assert_problem(client.post(path, json=body, headers={"Idempotency-Key": "k1"}), 409)
    assert backlog.records == 1


def test_a_cached_run_says_so_and_serves_the_earlier_files(
    client: TestClient, fake_conns: Connections, store: MemoryStore, backlog: Backlog
) -> None:
    first = post(client, BODY | {"cache": True}).json()
    store_output(store, first["id"], "out.png", b"png bytes")
    Life(fake_conns.text, first["id"]).start().succeed("out.png")
    hit = post(client, BODY | {"cache": True})
    assert hit.status_code == 200, hit.text  # already ended
    view = hit.json()
    assert view["status"] == "succeeded" and view["cached"] is True and view["cached_from"] == first["id"]
    assert view["id"] != first["id"]
    (output,) = view["outputs"]
    assert output["url"] == f"http://testserver/v1/runs/{view['id']}/outputs/out.png"
    assert client.get(output["url"]).content == b"png bytes"
    assert client.get(f"/v1/runs/{first['id']}").json()["cached"] is False
    assert backlog.count == 0  # the first was dispatched by Life; the hit was never queued


def test_cache_must_be_a_boolean(client: TestClient, backlog: Backlog) -> None:
    problem = assert_problem(post(client, BODY | {"cache": "yes"}), 422)
    assert problem["errors"][0]["param"] == "cache"
    assert backlog.empty


def test_compat_submit_routes_honour_the_key(client: TestClient, backlog: Backlog) -> None:
    flask = [
        client.post("/api/workflow/invert", json={"1": {"inputs": {"color": 7}}}, headers={"Idempotency-Key": "f"})
    ]
    flask.append(
        client.post("/api/workflow/invert", json={"1": {"inputs": {"color": 7}}}, headers={"Idempotency-Key": "f"})
    )
    assert flask[0].json()["prompt_id"] == flask[1].json()["prompt_id"]
    body = {"workflow_id": "invert", "params": {"color": 8}}
    comflowy = [client.post("/api/open/v0/run", json=body, headers={"Idempotency-Key": "c"}) for _ in range(2)]
    assert comflowy[0].json()["data"]["run_id"] == comflowy[1].json()["data"]["run_id"]
    assert backlog.records == 2
