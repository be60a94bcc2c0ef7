"""Batches through real processes: ``POST /v1/runs/batch``, ``GET /v1/batches/{id}``, its cancel, ``GET /v1/runs``,
and the batch's ``on_batch_done_url``, which fires once when its last run has ended, whatever the outcomes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.test_webhooks_e2e import WEBHOOK_ENV, secret
from tests.support_stack import LocalStack
from tests.webhook_receiver import Receiver, verify_all

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


def batch_of(api: str, runs: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    reply = requests.post(f"{api}/v1/runs/batch", json={"runs": runs, **extra}, timeout=30)
    assert reply.status_code == 200, reply.text
    answer: dict[str, Any] = reply.json()
    assert answer["refused"] == 0, answer
    return answer


def wait_batch_done(api: str, batch_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        view: dict[str, Any] = requests.get(f"{api}/v1/batches/{batch_id}", timeout=10).json()
        if view["done"] or time.monotonic() > deadline:
            return view
        time.sleep(0.1)


def test_the_done_callback_fires_once_after_the_last_run_with_failed_and_canceled_ones(
    redis_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    with LocalStack(redis_url, tmp_path, workers=1, exec_seconds=0.2, env=WEBHOOK_ENV) as stack:
        (fake,) = stack.fakes
        # Two runs fail for good (a node error that is not transient); one is canceled while still queued.
        fake.control(fail_node_type="ImageInvert", fail_times=2, exception_type="ValueError", exception_message="bad")
        runs = [{"workflow": "invert", "params": {"width": 8, "height": 8, "color": i}} for i in range(8)]
        answer = batch_of(stack.api, runs, on_batch_done_url=receiver.url + "/batch")
        batch_id = answer["batch_id"]
        last = answer["items"][-1]["run"]["id"]
        canceled = requests.post(f"{stack.api}/v1/runs/{last}/cancel", timeout=15)
        assert canceled.json()["status"] == "canceled", canceled.text

        receiver.wait_for(lambda: receiver.delivered("/batch"), timeout=60)
        view = wait_batch_done(stack.api, batch_id)
        time.sleep(1.0)  # a second callback would come now
        (delivery,) = receiver.delivered("/batch")
        body = delivery.json()
        assert body["type"] == "batch.done" and body["batch_id"] == batch_id and body["total"] == 8
        assert {k: v for k, v in body["counts"].items() if v} == {"succeeded": 5, "failed": 2, "canceled": 1}
        assert body["counts"] == view["counts"] and view["done"] and view["ended"] == 8
        assert body["gpu_seconds"] == pytest.approx(view["gpu_seconds"]) and body["gpu_seconds"] > 0
        assert delivery.webhook_id == f"msg_{batch_id}_done"
        verify_all(receiver.snapshot("/batch"), secret(redis_url))


def test_a_batch_is_followed_listed_and_canceled(redis_url: str, tmp_path: Path) -> None:
    with LocalStack(redis_url, tmp_path, workers=1, exec_seconds=1.0) as stack:
        params = {"width": 8, "height": 8}
        runs = [{"workflow": "invert", "params": params, "idempotency_key": f"k{i}"} for i in range(5)]
        answer = batch_of(stack.api, runs)
        batch_id = answer["batch_id"]
        ids = [item["run"]["id"] for item in answer["items"]]
        assert all(item["run"]["batch_id"] == batch_id for item in answer["items"])

        # The same items again: the same runs (replayed), no new batch of runs.
        again = batch_of(stack.api, runs)
        assert [item["run"]["id"] for item in again["items"]] == ids and all(i["replayed"] for i in again["items"])

        page = requests.get(f"{stack.api}/v1/batches/{batch_id}", params={"limit": 2}, timeout=10).json()
        assert page["total"] == 5 and [r["id"] for r in page["runs"]] == ids[:2] and page["next_cursor"]
        rest = requests.get(
            f"{stack.api}/v1/batches/{batch_id}", params={"limit": 10, "cursor": page["next_cursor"]}, timeout=10
        ).json()
        assert [r["id"] for r in rest["runs"]] == ids[2:] and rest["next_cursor"] is None

        # A run waiting behind the others has an ETA once the workflow's first run has told its GPU time.
        first = requests.get(f"{stack.api}/v1/runs/{ids[0]}", params={"wait": 30}, timeout=40).json()
        assert first["status"] == "succeeded", first
        queued = [
            r for r in requests.get(f"{stack.api}/v1/batches/{batch_id}", timeout=10).json()["runs"]
            if r["status"] == "queued"
        ]  # fmt: skip
        if queued:
            view = requests.get(f"{stack.api}/v1/runs/{queued[-1]['id']}", timeout=10).json()
            assert view["status"] != "queued" or view["eta_seconds"] > 0, view

        after = requests.post(f"{stack.api}/v1/batches/{batch_id}/cancel", timeout=30).json()
        view = wait_batch_done(stack.api, batch_id)
        assert view["done"] and view["counts"]["succeeded"] + view["counts"]["canceled"] == 5, (after, view)
        assert view["counts"]["canceled"] >= 2  # at least those still queued behind the worker's pipeline

        listed = requests.get(f"{stack.api}/v1/runs", params={"status": "canceled", "limit": 500}, timeout=10).json()
        assert {r["id"] for r in listed["runs"]} == {r["id"] for r in view["runs"] if r["status"] == "canceled"}
        newest_first = requests.get(f"{stack.api}/v1/runs", params={"limit": 3}, timeout=10).json()
        assert [r["id"] for r in newest_first["runs"]] == ids[::-1][:3]
        older = requests.get(
            f"{stack.api}/v1/runs", params={"limit": 3, "cursor": newest_first["next_cursor"]}, timeout=10
        ).json()
        assert [r["id"] for r in older["runs"]] == ids[::-1][3:] and older["next_cursor"] is None
