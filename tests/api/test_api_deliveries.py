"""``GET /v1/runs/{id}/deliveries`` and callback URLs checked at submit time."""

from __future__ import annotations

import pytest

from api.app import create_app
from dispatcher.connections import Connections
from dispatcher.settings import load_settings
from dispatcher.storage import MemoryStore
from dispatcher.webhooks.deliveries import Attempt, Delivery, DeliveryLog, Outcome
from tests.api.helpers import Backlog, TestClient, assert_problem, tenant_with_key

PUBLIC_HOOK = "https://93.184.215.14/hook"  # a public address literal: no DNS needed


def record(conns: Connections, run_id: str, *attempts: tuple[int, int | None, Outcome]) -> None:
    log = DeliveryLog(conns.text, keep_seconds=600)
    delivery = Delivery(f"msg_{run_id}_1-0", run_id, "default", "done", PUBLIC_HOOK, "{}", 1_700_000_000.0)
    for number, status, outcome in attempts:
        at = 1_700_000_000.0 + number
        next_at = at + 2 if outcome is Outcome.RETRYING else None
        error = None if outcome is Outcome.DELIVERED else (f"HTTP {status}" if status else "ConnectionError: refused")
        log.record(
            delivery, Attempt(delivery.webhook_id, "done", PUBLIC_HOOK, number, at, status, error, outcome, next_at)
        )


def test_every_attempt_oldest_first(client: TestClient, fake_conns: Connections) -> None:
    reply = client.post("/v1/workflows/invert/runs", json={"callback_urls": {"on_result_url": PUBLIC_HOOK}})
    assert reply.status_code == 202, reply.text
    run_id = reply.json()["id"]
    assert client.get(f"/v1/runs/{run_id}/deliveries").json() == {"deliveries": []}
    record(fake_conns, run_id, (1, None, Outcome.RETRYING), (2, 503, Outcome.RETRYING), (3, 200, Outcome.DELIVERED))
    listed = client.get(f"/v1/runs/{run_id}/deliveries").json()["deliveries"]
    assert [(d["attempt"], d["status_code"], d["outcome"]) for d in listed] == [
        (1, None, "retrying"),
        (2, 503, "retrying"),
        (3, 200, "delivered"),
    ]
    assert listed[0] == {
        "webhook_id": f"msg_{run_id}_1-0",
        "event": "done",
        "url": PUBLIC_HOOK,
        "attempt": 1,
        "at": "2023-11-14T22:13:21.000Z",
        "status_code": None,
        "error": "ConnectionError: refused",
        "outcome": "retrying",
        "next_at": "2023-11-14T22:13:23.000Z",
    }
    assert listed[2]["next_at"] is None and listed[2]["error"] is None


def test_an_unknown_run_is_404(client: TestClient) -> None:
    assert_problem(client.get("/v1/runs/0123abcd/deliveries"), 404)


@pytest.mark.parametrize(
    ("name", "url"),
    [("on_result_url", "http://127.0.0.1:9000/hook"), ("on_progress_event_url", "http://169.254.169.254/x")],
)
def test_a_callback_to_a_refused_address_is_422_and_nothing_is_queued(
    client: TestClient, backlog: Backlog, name: str, url: str
) -> None:
    reply = client.post("/v1/workflows/invert/runs", json={"callback_urls": {name: url}})
    body = assert_problem(reply, 422)
    assert f"callback_urls.{name}" in body["detail"]
    assert backlog.empty


def test_another_tenants_deliveries_are_404(fake_conns: Connections) -> None:
    app = create_app(load_settings({}, max_body_bytes=4096), conns=fake_conns, store=MemoryStore())
    acme, globex = tenant_with_key(fake_conns, "acme"), tenant_with_key(fake_conns, "globex")
    no_read = tenant_with_key(fake_conns, "acme2", scopes="submit")
    with TestClient(app) as client:
        reply = client.post(
            "/v1/workflows/invert/runs",
            json={"callback_urls": {"on_result_url": PUBLIC_HOOK}},
            headers={"X-API-KEY": acme},
        )
        run_id = reply.json()["id"]
        assert client.get(f"/v1/runs/{run_id}/deliveries", headers={"X-API-KEY": acme}).status_code == 200
        assert_problem(client.get(f"/v1/runs/{run_id}/deliveries", headers={"X-API-KEY": globex}), 404)
        assert_problem(client.get(f"/v1/runs/{run_id}/deliveries", headers={"X-API-KEY": no_read}), 403)
        assert_problem(client.get(f"/v1/runs/{run_id}/deliveries"), 401)
