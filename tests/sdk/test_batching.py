"""``submit_many``: chunks of at most 1000 through ``POST /v1/runs/batch``, keys kept, refusals per item."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from comfy_dispatch_client import Client, InvalidRequest, RateLimited, RetryPolicy, RunRequest
from tests.sdk.fakes import API, Sleeps, problem, run_json

pytestmark = pytest.mark.timeout(10)


class BatchApi:
    """A batch endpoint: accepts every item (a run per key), or refuses those ``refuse`` says, with a problem."""

    def __init__(self, refuse: Any = None, too_large_over: int | None = None) -> None:
        self.bodies: list[list[dict[str, Any]]] = []
        self.runs: dict[str, str] = {}
        self.refuse = refuse or (lambda round_, index, item: None)
        self.too_large_over = too_large_over

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert (request.method, request.url.path) == ("POST", "/v1/runs/batch")
        items = json.loads(request.content)["runs"]
        self.bodies.append(items)
        if self.too_large_over is not None and len(items) > self.too_large_over:
            return problem(413, "request body is larger than allowed")
        answers = []
        for index, item in enumerate(items):
            refusal = self.refuse(len(self.bodies), index, item)
            if refusal is not None:
                answers.append({"index": index, "status": refusal[0], "problem": refusal[1]})
                continue
            key = item["idempotency_key"]
            replayed = key in self.runs
            run_id = self.runs.setdefault(key, f"run-{len(self.runs)}")
            run = run_json(run_id, batch_id="b1")
            answers.append({"index": index, "status": 202, "run": run, "replayed": replayed})
        accepted = sum(1 for a in answers if a["status"] == 202)
        return httpx.Response(
            200, json={"batch_id": "b1", "accepted": accepted, "refused": len(items) - accepted, "items": answers}
        )


def client_of(api: BatchApi, sleeps: Sleeps | None = None) -> Client:
    transport = httpx.MockTransport(api)
    return Client(API, transport=transport, sleep=Sleeps() if sleeps is None else sleeps, env={})


def items(count: int) -> list[dict[str, Any]]:
    return [{"workflow": "invert", "params": {"color": i}} for i in range(count)]


def test_2500_items_go_in_chunks_of_1000_in_order_each_with_a_key() -> None:
    api = BatchApi()
    with client_of(api) as client:
        result = client.submit_many(items(2500))
    assert [len(body) for body in api.bodies] == [1000, 1000, 500]
    sent = [item for body in api.bodies for item in body]
    assert [item["params"]["color"] for item in sent] == list(range(2500))
    assert len({item["idempotency_key"] for item in sent}) == 2500
    assert result.accepted == 2500 and result.refused == 0 and result.batch_ids == ["b1"]
    assert [item.index for item in result.items] == list(range(2500))
    assert [item.idempotency_key for item in result.items] == [item["idempotency_key"] for item in sent]


@pytest.mark.parametrize(("chunk_size", "sizes"), [(1, [1, 1, 1]), (2, [2, 1]), (1000, [3])])
def test_chunk_size(chunk_size: int, sizes: list[int]) -> None:
    api = BatchApi()
    with client_of(api) as client:
        client.submit_many(items(3), chunk_size=chunk_size)
    assert [len(body) for body in api.bodies] == sizes


def test_callers_keys_and_fields_are_kept_and_sending_again_replays() -> None:
    api = BatchApi()
    request = RunRequest("invert", {"color": 3}, priority="high", idempotency_key="f/line-1", options={"cache": True})
    with client_of(api) as client:
        other = {"workflow": "txt2img", "params": {"prompt": "a"}, "idempotency_key": "k2"}
        first = client.submit_many([request, other])
        again = client.submit_many([request])
    assert api.bodies[0][0] == {
        "workflow": "invert",
        "params": {"color": 3},
        "priority": "high",
        "cache": True,
        "idempotency_key": "f/line-1",
    }
    assert api.bodies[0][1]["idempotency_key"] == "k2"
    assert not first.items[0].replayed and again.items[0].replayed
    assert again.runs[0].id == first.runs[0].id


def test_items_refused_for_rate_are_sent_again_after_their_retry_after() -> None:
    def refuse(round_: int, index: int, item: dict[str, Any]) -> Any:
        if round_ == 1 and item["params"]["color"] >= 2:
            return 429, {"status": 429, "title": "Too Many Requests", "detail": "over the rate", "retry_after": 2.5}
        return None

    api, sleeps = BatchApi(refuse), Sleeps()
    with client_of(api, sleeps) as client:
        result = client.submit_many(items(5))
    assert [len(b) for b in api.bodies] == [5, 3]
    assert [i["params"]["color"] for i in api.bodies[1]] == [2, 3, 4]
    assert [i["idempotency_key"] for i in api.bodies[1]] == [i["idempotency_key"] for i in api.bodies[0][2:]]
    assert result.accepted == 5 and sleeps and sleeps[0] >= 2.5


def test_final_refusals_stay_in_their_items_and_refuse_nothing_else() -> None:
    def refuse(round_: int, index: int, item: dict[str, Any]) -> Any:
        if index == 1:
            return 422, {"status": 422, "title": "Unprocessable", "detail": "color: too large", "errors": [{"a": 1}]}
        return None

    api = BatchApi(refuse)
    with client_of(api) as client:
        result = client.submit_many(items(3))
    assert len(api.bodies) == 1 and result.accepted == 2 and result.refused == 1
    refused = result.items[1]
    assert not refused.accepted and refused.status == 422
    assert isinstance(refused.error, InvalidRequest) and refused.error.detail == "color: too large"


def test_rate_refusals_round_after_round_are_given_up_with_their_problem() -> None:
    def refuse(round_: int, index: int, item: dict[str, Any]) -> Any:
        return 429, {"status": 429, "title": "Too Many Requests", "retry_after": 0}

    api = BatchApi(refuse)
    transport = httpx.MockTransport(api)
    with Client(API, transport=transport, sleep=Sleeps(), env={}, retry=RetryPolicy(attempts=3)) as client:
        result = client.submit_many(items(2))
    assert len(api.bodies) == 3
    assert all(isinstance(item.error, RateLimited) for item in result.items)


def test_a_chunk_refused_as_too_large_is_split() -> None:
    api = BatchApi(too_large_over=2)
    with client_of(api) as client:
        result = client.submit_many(items(5))
    assert [len(b) for b in api.bodies] == [5, 2, 2, 1]
    assert result.accepted == 5
    assert [r.params for r in result.runs] == [{"color": 1}] * 5  # (run_json's params; the order is the items')


def test_an_item_without_a_workflow_is_refused_before_anything_is_sent() -> None:
    api = BatchApi()
    with client_of(api) as client, pytest.raises(ValueError, match="workflow"):
        client.submit_many([{"params": {}}])
    assert api.bodies == []
