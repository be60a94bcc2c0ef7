"""Callbacks through the whole stack: API, scheduler, workers, fake ComfyUIs and ``comfy-dispatch webhooks``.

A real HTTP receiver on 127.0.0.1 (allowed with COMFY_DISPATCH_CALLBACK_ALLOW=loopback) gets signed progress
events and exactly one signed result per run, whose output URLs work; while it answers 503, or does not
listen at all, deliveries are retried, and every result arrives once it is back, under the same webhook-id.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from redis import Redis

from dispatcher.settings import load_settings
from dispatcher.tenants import DEFAULT_TENANT, TenantStore
from tests.support_stack import LocalStack, first_pixel, submit
from tests.webhook_receiver import Receiver, verify_all

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

WEBHOOK_ENV = {
    "COMFY_DISPATCH_CALLBACK_ALLOW": "loopback",
    "COMFY_DISPATCH_WEBHOOK_RETRY_BASE": "0.2",
    "COMFY_DISPATCH_WEBHOOK_RETRY_CAP": "1",
    "COMFY_DISPATCH_WEBHOOK_TIMEOUT": "2",
    "COMFY_DISPATCH_WEBHOOK_RETRY_FOR": "60",
}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


@pytest.fixture
def stack(redis_url: str, tmp_path: Path) -> Iterator[LocalStack]:
    stack = LocalStack(redis_url, tmp_path, workers=2, env=WEBHOOK_ENV)
    stack.env["COMFY_DISPATCH_PUBLIC_URL"] = stack.api  # absolute output URLs in callbacks
    with stack:
        yield stack


def secret(redis_url: str) -> str:
    with Redis.from_url(redis_url, decode_responses=True) as redis:
        return TenantStore(redis, load_settings({})).webhook_secret(DEFAULT_TENANT)


def callbacks(receiver: Receiver) -> dict[str, str]:
    return {"on_result_url": receiver.url + "/result", "on_progress_event_url": receiver.url + "/progress"}


def submit_runs(stack: LocalStack, receiver: Receiver, count: int) -> list[str]:
    session = requests.Session()
    body = {"params": {"width": 8, "height": 8, "color": 255}, "callback_urls": callbacks(receiver)}
    return [submit(session, stack.api, "invert", body) for _ in range(count)]


def results_by_run(receiver: Receiver) -> dict[str, list[str]]:
    """run id -> webhook-ids of the results it was delivered (2xx)."""
    found: dict[str, list[str]] = {}
    for item in receiver.delivered("/result"):
        found.setdefault(item.json()["run_id"], []).append(item.webhook_id)
    return found


def test_signed_progress_and_one_result_per_run_with_working_urls(
    stack: LocalStack, receiver: Receiver, redis_url: str
) -> None:
    runs = submit_runs(stack, receiver, 4)
    receiver.wait_for(lambda: set(results_by_run(receiver)) == set(runs))
    time.sleep(0.5)  # anything after the result would be a duplicate
    assert all(len(ids) == 1 for ids in results_by_run(receiver).values()), receiver.snapshot("/result")
    verify_all(receiver.snapshot(), secret(redis_url))

    for item in receiver.delivered("/result"):
        result = item.json()
        assert result["type"] == "success", stack.logs()
        [url] = result["output_images"]
        assert url.startswith(f"{stack.api}/v1/runs/{result['run_id']}/outputs/")
        assert first_pixel(requests.get(url, timeout=10).content) == (255, 255, 0)
        assert list(result["full_outputs"].values()) == [{"images": [url]}]

    for run_id in runs:
        kinds = [p.json()["type"] for p in receiver.delivered("/progress") if p.json()["payload"]["run_id"] == run_id]
        assert {"waiting", "pending", "message"} <= set(kinds)
        listed = requests.get(f"{stack.api}/v1/runs/{run_id}/deliveries", timeout=10).json()["deliveries"]
        assert {d["outcome"] for d in listed} == {"delivered"}
        assert [d["event"] for d in listed if d["event"] == "done"] == ["done"]


def test_every_result_arrives_after_503s_and_a_receiver_not_listening(
    stack: LocalStack, receiver: Receiver, redis_url: str
) -> None:
    receiver.status = 503
    runs = submit_runs(stack, receiver, 3)

    def result_attempts(run_id: str) -> list[dict[str, object]]:
        listed = requests.get(f"{stack.api}/v1/runs/{run_id}/deliveries", timeout=10).json()["deliveries"]
        return [d for d in listed if d["event"] == "done"]

    receiver.wait_for(lambda: all(len(result_attempts(r)) >= 2 for r in runs), timeout=30)
    receiver.down()  # now nothing listens: connections are refused
    receiver.wait_for(lambda: all(any(a["status_code"] is None for a in result_attempts(r)) for r in runs), 30)
    receiver.status = 200
    receiver.up()
    receiver.wait_for(lambda: set(results_by_run(receiver)) == set(runs), timeout=30)

    verify_all(receiver.snapshot(), secret(redis_url))
    for run_id in runs:
        attempts = result_attempts(run_id)
        assert [a["outcome"] for a in attempts] == ["retrying"] * (len(attempts) - 1) + ["delivered"]
        assert 503 in {a["status_code"] for a in attempts} and None in {a["status_code"] for a in attempts}
        [webhook_id] = {a["webhook_id"] for a in attempts}
        sent = [r for r in receiver.snapshot("/result") if r.json()["run_id"] == run_id]
        assert {r.webhook_id for r in sent} == {webhook_id}  # the same id on every attempt that reached it
        assert results_by_run(receiver)[run_id] == [webhook_id]  # delivered once
