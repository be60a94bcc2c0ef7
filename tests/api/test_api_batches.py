"""POST /v1/runs/batch, GET /v1/batches/{id} and POST /v1/batches/{id}/cancel: items checked, admitted and stored
each on its own, the batch followed and canceled as one, other tenants' batches not found."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI

from api.app import create_app
from dispatcher import keys
from dispatcher.connections import Connections
from dispatcher.settings import Settings, load_settings
from dispatcher.storage import MemoryStore
from dispatcher.tenants import TenantStore
from tests.api.helpers import Backlog, TestClient, assert_problem, finish_run, tenant_with_key

PUBLIC_URL = "http://8.8.8.8/batch-done"  # an address literal: checked without a DNS lookup


def run_item(color: int = 0, **fields: Any) -> dict[str, Any]:
    return {"workflow": "invert", "params": {"width": 8, "height": 8, "color": color}, **fields}


def post_batch(client: TestClient, body: Any, headers: dict[str, str] | None = None) -> dict[str, Any]:
    response = client.post("/v1/runs/batch", json=body, headers=headers or {})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def run_ids(answer: dict[str, Any]) -> list[str]:
    return [item["run"]["id"] for item in answer["items"] if item["status"] == 202]


def batch_entries(conns: Connections) -> list[dict[str, str]]:
    return [fields for _, fields in conns.text.xrange(keys.WEBHOOK_EVENTS) if "batch" in fields]


# -- submitting --------------------------------------------------------------------------------------------------------


def test_a_batch_answers_each_item_in_order(client: TestClient, backlog: Backlog) -> None:
    answer = post_batch(client, {"runs": [run_item(1), run_item(2, priority="high"), run_item(3)]})
    assert answer["accepted"] == 3 and answer["refused"] == 0
    assert answer["batch_id"].startswith("b_")
    assert [item["index"] for item in answer["items"]] == [0, 1, 2]
    for index, item in enumerate(answer["items"]):
        assert item["status"] == 202 and item["replayed"] is False and item["problem"] is None
        run = item["run"]
        assert run["status"] == "queued" and run["workflow"] == "invert"
        assert run["params"]["color"] == index + 1
        assert run["batch_id"] == answer["batch_id"]
    assert answer["items"][1]["run"]["priority"] == "high"
    assert backlog.count == 3
    for run_id in run_ids(answer):
        assert client.get(f"/v1/runs/{run_id}").json()["batch_id"] == answer["batch_id"]


def test_a_bare_list_is_a_batch(client: TestClient, backlog: Backlog) -> None:
    answer = post_batch(client, [run_item(1), run_item(2)])
    assert answer["accepted"] == 2 and backlog.count == 2
    spaced = client.post("/v1/runs/batch", content=b'  \n [ {"workflow": "invert"} ] ')
    assert spaced.status_code == 200 and spaced.json()["accepted"] == 1


@pytest.mark.parametrize(
    ("item", "status", "param"),
    [
        ({"params": {"width": 8}}, 422, "workflow"),  # no workflow
        ({"workflow": ""}, 422, "workflow"),
        ({"workflow": 7}, 422, "workflow"),
        ({"workflow": "invert", "colour": 1}, 422, "colour"),  # an unknown field
        ({"workflow": "invert", "params": {"width": 0}}, 422, "width"),  # a bad parameter
        ({"workflow": "invert", "params": {"depth": 3}}, 422, "depth"),
        ({"workflow": "invert", "priority": "urgent"}, 422, "priority"),
        ({"workflow": "invert", "timeout_seconds": -1}, 422, "timeout_seconds"),
        ({"workflow": "invert", "cache": "yes"}, 422, "cache"),
        ({"workflow": "invert", "stream": True}, 422, "stream"),
        ({"workflow": "invert", "idempotency_key": 5}, 422, "idempotency_key"),
        ({"workflow": "invert", "idempotency_key": "has space"}, 422, "Idempotency-Key"),
        ({"workflow": "invert", "callback_urls": {"on_result_url": "ftp://x"}}, 422, "callback_urls.on_result_url"),
        ("invert", 422, "runs[]"),  # not an object
        (["invert"], 422, "runs[]"),
        (None, 422, "runs[]"),
        ({"workflow": "nope"}, 404, None),  # an unknown workflow
    ],
)
def test_a_bad_item_is_refused_alone(
    client: TestClient, backlog: Backlog, item: Any, status: int, param: str | None
) -> None:
    answer = post_batch(client, {"runs": [run_item(1), item, run_item(2)]})
    assert answer["accepted"] == 2 and answer["refused"] == 1
    assert [i["status"] for i in answer["items"]] == [202, status, 202]
    refused = answer["items"][1]
    assert refused["index"] == 1 and refused["run"] is None and refused["replayed"] is False
    problem = refused["problem"]
    assert problem["status"] == status and problem["instance"] == "/v1/runs/batch#1"
    assert {"type", "title", "detail"} <= set(problem)
    if param is not None:
        assert problem["type"].endswith("invalid-parameter")
        assert problem["errors"][0]["param"] == param
    else:
        assert problem["type"].endswith("workflow-not-found")
    assert backlog.count == 2
    assert client.get(f"/v1/batches/{answer['batch_id']}").json()["total"] == 2


def test_a_batch_of_bad_items_only_creates_no_batch(client: TestClient, backlog: Backlog) -> None:
    answer = post_batch(client, [{"workflow": "nope"}, 5])
    assert answer == {
        "batch_id": None,
        "accepted": 0,
        "refused": 2,
        "items": answer["items"],
    }
    assert [i["status"] for i in answer["items"]] == [404, 422]
    assert backlog.empty


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "runs"),
        ({"runs": []}, "runs"),
        ([], "runs"),
        ({"runs": {"workflow": "invert"}}, "runs"),
        ({"runs": "invert"}, "runs"),
        ({"runs": [run_item()], "extra": 1}, "extra"),
        ({"runs": [run_item()] * 1001}, "runs"),
        ([run_item()] * 1001, "runs"),
        ({"runs": [run_item()], "on_batch_done_url": "ftp://hooks.example.com/"}, "on_batch_done_url"),
        ({"runs": [run_item()], "on_batch_done_url": "hooks.example.com/done"}, "on_batch_done_url"),
        ({"runs": [run_item()], "on_batch_done_url": 5}, "on_batch_done_url"),
        ({"runs": [run_item()], "on_batch_done_url": "http://127.0.0.1:9/done"}, "on_batch_done_url"),  # loopback
        ({"runs": [run_item()], "on_batch_done_url": "http://10.0.0.8/done"}, "on_batch_done_url"),  # private
        ({"runs": [run_item()], "on_batch_done_url": "http://user:pw@8.8.8.8/done"}, "on_batch_done_url"),
    ],
)
def test_a_body_that_is_no_batch_is_a_422_and_nothing_is_stored(
    client: TestClient, backlog: Backlog, body: Any, param: str
) -> None:
    problem = assert_problem(client.post("/v1/runs/batch", json=body), 422)
    assert problem["errors"][0]["param"] == param
    assert backlog.empty


def test_a_thousand_items_are_accepted(client: TestClient, fake_conns: Connections, backlog: Backlog) -> None:
    TenantStore(fake_conns.text, Settings()).set("default", submit_burst=1000)  # the default burst is 100
    answer = post_batch(client, [run_item(i % 256) for i in range(1000)])
    assert answer["accepted"] == 1000 and backlog.count == 1000
    assert client.get(f"/v1/batches/{answer['batch_id']}").json()["total"] == 1000


def test_the_default_burst_bounds_a_batch(client: TestClient, backlog: Backlog) -> None:
    answer = post_batch(client, [run_item(i % 256) for i in range(150)])
    assert (answer["accepted"], answer["refused"]) == (100, 50)  # COMFY_DISPATCH_SUBMIT_BURST's default
    assert {i["status"] for i in answer["items"][100:]} == {429}
    assert backlog.count == 100


@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        b"[",
        b'"runs"',
        b"5",
        b"[1, 2",
        b'[{"workflow": "invert"}], "on_batch_done_url": "http://8.8.8.8/x"',  # no JSON text, whatever it wraps into
        b'[], "runs": [{"workflow": "invert"}]',
    ],
)
def test_a_body_that_is_no_json_is_a_400(client: TestClient, backlog: Backlog, raw: bytes) -> None:
    response = client.post("/v1/runs/batch", content=raw, headers={"content-type": "application/json"})
    assert_problem(response, 400)
    assert backlog.empty


def test_the_callback_url_is_kept(client: TestClient) -> None:
    answer = post_batch(client, {"runs": [run_item()], "on_batch_done_url": PUBLIC_URL})
    assert client.get(f"/v1/batches/{answer['batch_id']}").json()["on_batch_done_url"] == PUBLIC_URL
    plain = post_batch(client, {"runs": [run_item()], "on_batch_done_url": None})
    assert client.get(f"/v1/batches/{plain['batch_id']}").json()["on_batch_done_url"] is None


def test_a_callback_host_that_does_not_resolve_now_is_let_through(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # as a run's callback_urls: the sender checks every address again at each attempt
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "hooks.invalid":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    answer = post_batch(client, {"runs": [run_item()], "on_batch_done_url": "https://hooks.invalid/done"})
    assert answer["accepted"] == 1


# -- idempotency ----------------------------------------------------------------------------------------------------


def test_an_item_sent_again_with_its_key_is_replayed(client: TestClient, backlog: Backlog) -> None:
    body = {"runs": [run_item(1, idempotency_key="file-1/line-1"), run_item(2, idempotency_key="file-1/line-2")]}
    first = post_batch(client, body)
    again = post_batch(client, body)
    assert [i["status"] for i in again["items"]] == [202, 202]
    assert [i["replayed"] for i in again["items"]] == [True, True]
    assert run_ids(again) == run_ids(first)
    assert backlog.count == 2
    assert [i["run"]["batch_id"] for i in again["items"]] == [first["batch_id"]] * 2  # where they were stored


def test_a_key_reused_with_another_body_is_a_409_item(client: TestClient, backlog: Backlog) -> None:
    first = post_batch(client, [run_item(1, idempotency_key="k-1")])
    again = post_batch(client, [run_item(2, idempotency_key="k-1"), run_item(3, idempotency_key="k-2")])
    assert [i["status"] for i in again["items"]] == [409, 202]
    problem = again["items"][0]["problem"]
    assert problem["type"].endswith("conflict") and run_ids(first)[0] in problem["detail"]
    assert problem["instance"] == "/v1/runs/batch#0"
    assert backlog.count == 2


def test_a_key_used_twice_in_one_batch_names_one_run(client: TestClient, backlog: Backlog) -> None:
    answer = post_batch(client, [run_item(1, idempotency_key="k"), run_item(1, idempotency_key="k")])
    first, second = answer["items"]
    assert (first["replayed"], second["replayed"]) == (False, True)
    assert first["run"]["id"] == second["run"]["id"]
    assert backlog.count == 1


def test_a_batch_key_and_a_single_runs_key_are_the_same_key(client: TestClient) -> None:
    body = {"params": {"width": 8, "height": 8, "color": 1}}
    single = client.post("/v1/workflows/invert/runs", json=body, headers={"Idempotency-Key": "shared"})
    assert single.status_code == 202
    answer = post_batch(client, [{"workflow": "invert", **body, "idempotency_key": "shared"}])
    assert answer["items"][0]["replayed"] is True and answer["items"][0]["run"]["id"] == single.json()["id"]


# -- admission ------------------------------------------------------------------------------------------------------


@pytest.fixture
def auth_app(fake_conns: Connections, store: MemoryStore) -> FastAPI:
    return create_app(load_settings({}, max_body_bytes=4096), conns=fake_conns, store=store)


@pytest.fixture
def auth_client(auth_app: FastAPI) -> Iterator[TestClient]:
    with TestClient(auth_app) as test_client:
        yield test_client


def h(key: str) -> dict[str, str]:
    return {"X-API-KEY": key}


def test_items_over_the_keys_burst_are_429_items(
    auth_client: TestClient, fake_conns: Connections, backlog: Backlog
) -> None:
    key = tenant_with_key(fake_conns, "acme", submit_rate=0.01, submit_burst=5)
    answer = post_batch(auth_client, [run_item(i) for i in range(8)], headers=h(key))
    assert [i["status"] for i in answer["items"]] == [202] * 5 + [429] * 3
    assert (answer["accepted"], answer["refused"]) == (5, 3)
    for index, item in enumerate(answer["items"][5:], start=5):
        problem = item["problem"]
        assert problem["type"].endswith("rate-limited") and problem["instance"] == f"/v1/runs/batch#{index}"
        assert isinstance(problem["retry_after"], int) and 1 <= problem["retry_after"] <= 100
    assert backlog.count == 5
    # the bucket is empty: the next batch gets nothing, a single run neither
    later = post_batch(auth_client, [run_item(9)], headers=h(key))
    assert [i["status"] for i in later["items"]] == [429] and later["batch_id"] is None
    assert auth_client.post("/v1/workflows/invert/runs", json={}, headers=h(key)).status_code == 429


def test_bad_items_use_admission_too(auth_client: TestClient, fake_conns: Connections) -> None:
    key = tenant_with_key(fake_conns, "acme", submit_rate=0.01, submit_burst=2)
    answer = post_batch(auth_client, [{"workflow": "nope"}, run_item(1), run_item(2)], headers=h(key))
    assert [i["status"] for i in answer["items"]] == [404, 202, 429]


def test_each_key_has_its_own_bucket(auth_client: TestClient, fake_conns: Connections) -> None:
    first = tenant_with_key(fake_conns, "acme", submit_rate=0.01, submit_burst=3)
    second = tenant_with_key(fake_conns, "globex", submit_rate=0.01, submit_burst=3)
    assert post_batch(auth_client, [run_item(i) for i in range(4)], headers=h(first))["accepted"] == 3
    assert post_batch(auth_client, [run_item(i) for i in range(4)], headers=h(second))["accepted"] == 3


# -- following a batch ----------------------------------------------------------------------------------------------


def test_a_batch_has_counts_and_its_runs(client: TestClient, fake_conns: Connections) -> None:
    answer = post_batch(client, [run_item(i) for i in range(4)])
    batch_id, ids = answer["batch_id"], run_ids(answer)
    finish_run(fake_conns, ids[0], status="succeeded")
    finish_run(fake_conns, ids[1], status="failed", error={"message": "boom"})
    fake_conns.text.hset(keys.run(ids[0]), "gpu_seconds", "1.5")
    fake_conns.text.hset(keys.run(ids[1]), "gpu_seconds", "0.25")
    view = client.get(f"/v1/batches/{batch_id}").json()
    assert view["id"] == batch_id and view["total"] == 4
    assert view["counts"] == {"queued": 2, "running": 0, "succeeded": 1, "failed": 1, "canceled": 0}
    assert view["ended"] == 2 and view["done"] is False
    assert view["gpu_seconds"] == 1.75
    assert view["eta_seconds"] is None  # no ready worker, no mean
    assert view["created_at"].endswith("Z")
    assert [r["id"] for r in view["runs"]] == ids
    assert view["next_cursor"] is None


def test_a_batchs_runs_come_a_page_at_a_time(client: TestClient) -> None:
    answer = post_batch(client, [run_item(i) for i in range(7)])
    batch_id, ids = answer["batch_id"], run_ids(answer)
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        view = client.get(f"/v1/batches/{batch_id}", params=params).json()
        assert len(view["runs"]) <= 3 and view["total"] == 7
        seen += [r["id"] for r in view["runs"]]
        pages += 1
        cursor = view["next_cursor"]
        if cursor is None:
            break
    assert seen == ids and pages == 3


@pytest.mark.parametrize(
    "params", [{"cursor": "abc"}, {"cursor": "-1"}, {"cursor": "1" * 12}, {"limit": 0}, {"limit": 1001}]
)
def test_a_bad_page_is_a_422(client: TestClient, params: dict[str, Any]) -> None:
    batch_id = post_batch(client, [run_item()])["batch_id"]
    assert_problem(client.get(f"/v1/batches/{batch_id}", params=params), 422)


def test_an_unknown_batch_is_a_404(client: TestClient) -> None:
    problem = assert_problem(client.get("/v1/batches/b_000000000000000000000000"), 404)
    assert problem["type"].endswith("batch-not-found")
    assert_problem(client.post("/v1/batches/b_000000000000000000000000/cancel"), 404)


def test_another_tenants_batch_is_a_404(auth_client: TestClient, fake_conns: Connections) -> None:
    acme = tenant_with_key(fake_conns, "acme")
    globex = tenant_with_key(fake_conns, "globex")
    answer = post_batch(auth_client, [run_item(1), run_item(2)], headers=h(acme))
    batch_id = answer["batch_id"]
    assert auth_client.get(f"/v1/batches/{batch_id}", headers=h(acme)).status_code == 200
    problem = assert_problem(auth_client.get(f"/v1/batches/{batch_id}", headers=h(globex)), 404)
    assert problem["type"].endswith("batch-not-found")
    assert_problem(auth_client.post(f"/v1/batches/{batch_id}/cancel", headers=h(globex)), 404)
    statuses = {auth_client.get(f"/v1/runs/{r}", headers=h(acme)).json()["status"] for r in run_ids(answer)}
    assert statuses == {"queued"}  # the other tenant's cancel touched nothing


def test_reading_a_batch_needs_a_key(auth_client: TestClient, fake_conns: Connections) -> None:
    key = tenant_with_key(fake_conns, "acme")
    batch_id = post_batch(auth_client, [run_item()], headers=h(key))["batch_id"]
    assert_problem(auth_client.get(f"/v1/batches/{batch_id}"), 401)
    assert_problem(auth_client.post("/v1/runs/batch", json=[run_item()]), 401)
    reader = tenant_with_key(fake_conns, "acme", scopes="read")
    assert_problem(auth_client.post("/v1/runs/batch", json=[run_item()], headers=h(reader)), 403)
    assert_problem(auth_client.post(f"/v1/batches/{batch_id}/cancel", headers=h(reader)), 403)


# -- canceling a batch, and its callback -------------------------------------------------------------------------------


def test_cancel_ends_the_queued_runs(client: TestClient, fake_conns: Connections, backlog: Backlog) -> None:
    answer = post_batch(client, {"runs": [run_item(i) for i in range(3)], "on_batch_done_url": PUBLIC_URL})
    batch_id, ids = answer["batch_id"], run_ids(answer)
    finish_run(fake_conns, ids[0], status="succeeded")  # what ended already stays as it ended
    response = client.post(f"/v1/batches/{batch_id}/cancel")
    assert response.status_code == 200, response.text
    view = response.json()
    assert view["counts"] == {"queued": 0, "running": 0, "succeeded": 1, "failed": 0, "canceled": 2}
    assert view["done"] is True and view["eta_seconds"] is None
    assert backlog.count == 0
    assert [client.get(f"/v1/runs/{r}").json()["status"] for r in ids] == ["succeeded", "canceled", "canceled"]
    assert client.post(f"/v1/batches/{batch_id}/cancel").json()["counts"]["canceled"] == 2  # again: no change


def test_the_callback_entry_is_written_once_when_the_batch_is_canceled(
    client: TestClient, fake_conns: Connections
) -> None:
    answer = post_batch(client, {"runs": [run_item(i) for i in range(3)], "on_batch_done_url": PUBLIC_URL})
    batch_id = answer["batch_id"]
    assert batch_entries(fake_conns) == []
    client.post(f"/v1/batches/{batch_id}/cancel")
    client.post(f"/v1/batches/{batch_id}/cancel")
    assert batch_entries(fake_conns) == [{"batch": batch_id, "type": "batch.done"}]


def test_no_callback_no_entry(client: TestClient, fake_conns: Connections) -> None:
    batch_id = post_batch(client, [run_item(1)])["batch_id"]
    assert client.post(f"/v1/batches/{batch_id}/cancel").json()["done"] is True
    assert batch_entries(fake_conns) == []


def test_a_batch_of_replays_only_makes_no_batch(client: TestClient, fake_conns: Connections) -> None:
    items = [run_item(1, idempotency_key="a"), run_item(2, idempotency_key="b")]
    first = post_batch(client, items)
    again = post_batch(client, {"runs": items, "on_batch_done_url": PUBLIC_URL})
    # The runs are the first request's, counted (and called back) in its batch.
    assert again["batch_id"] is None and {i["run"]["batch_id"] for i in again["items"]} == {first["batch_id"]}
    assert batch_entries(fake_conns) == []


def test_the_answer_is_json_with_one_item_per_run(client: TestClient) -> None:
    response = client.post("/v1/runs/batch", json=[run_item(1)])
    assert response.headers["content-type"] == "application/json"
    assert set(json.loads(response.content)) == {"batch_id", "accepted", "refused", "items"}
    assert set(response.json()["items"][0]) == {"index", "status", "run", "replayed", "problem"}
