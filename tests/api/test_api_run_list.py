"""GET /v1/runs (a tenant's runs, newest first, in pages, filtered) and a run's ``eta_seconds`` and ``batch_id``."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI

from api.app import create_app
from dispatcher import keys
from dispatcher.connections import Connections
from dispatcher.scheduling import handout
from dispatcher.settings import load_settings
from dispatcher.storage import MemoryStore
from tests.api.helpers import TestClient, assert_problem, beat, finish_run, start_run, tenant_with_key

BODY = {"params": {"width": 8, "height": 8}}
BODIES: dict[str, dict[str, Any]] = {"invert": BODY, "txt2img": {"params": {"prompt": "a fox"}}}


def submit(client: TestClient, workflow: str = "invert", headers: dict[str, str] | None = None) -> str:
    response = client.post(f"/v1/workflows/{workflow}/runs", json=BODIES[workflow], headers=headers)
    assert response.status_code == 202, response.text
    run_id: str = response.json()["id"]
    return run_id


def listed(client: TestClient, headers: dict[str, str] | None = None, **params: Any) -> list[str]:
    """Every page's run ids, following next_cursor."""
    found: list[str] = []
    cursor: str | None = None
    for _ in range(1000):
        query = params | ({"cursor": cursor} if cursor else {})
        response = client.get("/v1/runs", params=query, headers=headers)
        assert response.status_code == 200, response.text
        page = response.json()
        found += [run["id"] for run in page["runs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return found
    raise AssertionError("next_cursor never ended")


# -- listing --------------------------------------------------------------------------------------------------------


def test_runs_are_listed_newest_first(client: TestClient) -> None:
    ids = [submit(client) for _ in range(3)]
    page = client.get("/v1/runs").json()
    assert [run["id"] for run in page["runs"]] == ids[::-1]
    assert page["next_cursor"] is None
    assert {"id", "status", "workflow", "created_at", "eta_seconds", "batch_id"} <= set(page["runs"][0])


def test_no_run_is_an_empty_list(client: TestClient) -> None:
    assert client.get("/v1/runs").json() == {"runs": [], "next_cursor": None}


@pytest.mark.parametrize("limit", [1, 2, 3, 7])
def test_pages_cover_every_run_once(client: TestClient, limit: int) -> None:
    ids = [submit(client) for _ in range(7)]
    assert listed(client, limit=limit) == ids[::-1]


def test_a_page_holds_at_most_its_limit(client: TestClient) -> None:
    for _ in range(5):
        submit(client)
    page = client.get("/v1/runs", params={"limit": 2}).json()
    assert len(page["runs"]) == 2 and isinstance(page["next_cursor"], str)


def test_filter_by_status(client: TestClient, fake_conns: Connections) -> None:
    queued, done, failed, running = (submit(client) for _ in range(4))
    finish_run(fake_conns, done, status="succeeded")
    finish_run(fake_conns, failed, status="failed", error={"message": "boom"})
    start_run(fake_conns, running)
    assert listed(client, status="succeeded") == [done]
    assert listed(client, status="failed") == [failed]
    assert listed(client, status="running") == [running]
    assert listed(client, status="queued") == [queued]
    assert listed(client, status="canceled") == []


def test_filter_by_workflow(client: TestClient) -> None:
    inverts = [submit(client, "invert") for _ in range(2)]
    other = submit(client, "txt2img")
    assert listed(client, workflow="invert") == inverts[::-1]
    assert listed(client, workflow="txt2img") == [other]
    assert listed(client, workflow="nope") == []


def test_filter_by_since(client: TestClient, fake_conns: Connections) -> None:
    old, new = submit(client), submit(client)
    # the first run was created a day ago
    created = time.time() - 86400
    fake_conns.text.hset(keys.run(old), "created_at", repr(created))
    fake_conns.text.zadd(keys.tenant_runs("default"), {old: created})
    an_hour_ago = time.time() - 3600
    rfc3339 = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(an_hour_ago))
    assert listed(client, since=rfc3339) == [new]
    assert listed(client, since=str(int(an_hour_ago))) == [new]
    assert listed(client, since="2000-01-01T00:00:00+02:00") == [new, old]
    assert listed(client, since="0") == [new, old]
    assert listed(client, since="2999-01-01T00:00:00Z") == []


def test_filters_combine_with_pages(client: TestClient, fake_conns: Connections) -> None:
    ids = [submit(client) for _ in range(6)]
    for run_id in ids[::2]:
        finish_run(fake_conns, run_id, status="succeeded")
    submit(client, "txt2img")
    assert listed(client, status="succeeded", workflow="invert", limit=1) == ids[::2][::-1]


@pytest.mark.parametrize(
    "params",
    [
        {"since": "yesterday"},
        {"since": "2026-01-01T00:00:00"},  # no zone
        {"since": "-5"},
        {"since": "nan"},
        {"since": "0001-01-01T00:00:00+01:00"},
        {"since": "x" * 65},
        {"cursor": "!!"},
        {"cursor": base64.urlsafe_b64encode(b"nan|r1").decode()},
        {"cursor": base64.urlsafe_b64encode(b"soon|r1").decode()},
        {"limit": 0},
        {"limit": 501},
        {"limit": "many"},
        {"status": "done"},
    ],
)
def test_bad_query_is_a_422_problem(client: TestClient, params: dict[str, Any]) -> None:
    submit(client)
    assert_problem(client.get("/v1/runs", params=params), 422)


def test_limit_500_is_allowed(client: TestClient) -> None:
    submit(client)
    assert len(client.get("/v1/runs", params={"limit": 500}).json()["runs"]) == 1


@pytest.fixture
def auth_app(fake_conns: Connections, store: MemoryStore) -> FastAPI:
    return create_app(load_settings({}, max_body_bytes=4096), conns=fake_conns, store=store)


@pytest.fixture
def auth_client(auth_app: FastAPI) -> Iterator[TestClient]:
    with TestClient(auth_app) as test_client:
        yield test_client


def test_a_tenant_sees_only_its_own_runs(auth_client: TestClient, fake_conns: Connections) -> None:
    acme = {"X-API-KEY": tenant_with_key(fake_conns, "acme")}
    globex = {"X-API-KEY": tenant_with_key(fake_conns, "globex")}
    acme_runs = [submit(auth_client, headers=acme) for _ in range(3)]
    globex_runs = [submit(auth_client, headers=globex) for _ in range(2)]
    assert listed(auth_client, headers=acme) == acme_runs[::-1]
    assert listed(auth_client, headers=globex) == globex_runs[::-1]
    assert listed(auth_client, headers=globex, status="queued", workflow="invert") == globex_runs[::-1]
    assert_problem(auth_client.get("/v1/runs"), 401)


def test_another_tenants_cursor_shows_nothing_of_theirs(auth_client: TestClient, fake_conns: Connections) -> None:
    acme = {"X-API-KEY": tenant_with_key(fake_conns, "acme")}
    globex = {"X-API-KEY": tenant_with_key(fake_conns, "globex")}
    for _ in range(3):
        submit(auth_client, headers=acme)
    mine = submit(auth_client, headers=globex)
    cursor = auth_client.get("/v1/runs", params={"limit": 1}, headers=acme).json()["next_cursor"]
    page = auth_client.get("/v1/runs", params={"cursor": cursor}, headers=globex).json()
    assert {run["id"] for run in page["runs"]} <= {mine}


# -- eta_seconds and batch_id in a run's view -------------------------------------------------------------------------


@pytest.fixture
def fresh_fleet(monkeypatch: pytest.MonkeyPatch) -> None:
    """The API reads the workers' heartbeats at every request (not at most every SLOTS_MAX_AGE seconds)."""
    monkeypatch.setattr(handout, "SLOTS_MAX_AGE", 0.0)
    monkeypatch.setattr(handout, "STALE_MAX_AGE", 0.0)


def view(client: TestClient, run_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/runs/{run_id}")
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def test_no_eta_without_a_ready_worker(client: TestClient, fake_conns: Connections, fresh_fleet: None) -> None:
    run_id = submit(client)
    fake_conns.text.hset(keys.WORKFLOW_SECONDS, "invert", "12.5")
    assert view(client, run_id)["eta_seconds"] is None
    beat(fake_conns, "gpu-a", healthy=False)  # paused: its ComfyUI does not answer
    assert view(client, run_id)["eta_seconds"] is None
    beat(fake_conns, "gpu-b", healthy=True, age=3600)  # its heartbeat is long gone
    assert view(client, run_id)["eta_seconds"] is None


def test_no_eta_without_a_mean(client: TestClient, fake_conns: Connections, fresh_fleet: None) -> None:
    run_id = submit(client)
    beat(fake_conns, "gpu-a", healthy=True)
    assert view(client, run_id)["eta_seconds"] is None
    fake_conns.text.hset(keys.WORKFLOW_SECONDS, "txt2img", "30")  # another workflow's says nothing of this one
    assert view(client, run_id)["eta_seconds"] is None


def test_a_queued_runs_eta_from_its_place_and_the_ready_workers(
    client: TestClient, fake_conns: Connections, fresh_fleet: None
) -> None:
    ids = [submit(client) for _ in range(3)]  # no worker yet: all stay queued, at places 0, 1, 2
    fake_conns.text.hset(keys.WORKFLOW_SECONDS, "invert", "12.5")
    beat(fake_conns, "gpu-a", healthy=True)
    assert [view(client, r)["eta_seconds"] for r in ids] == [12.5, 25.0, 37.5]
    assert [view(client, r)["queue_position"] for r in ids] == [0, 1, 2]
    beat(fake_conns, "gpu-b", healthy=True)
    assert [view(client, r)["eta_seconds"] for r in ids] == [12.5, 12.5, 25.0]


def test_a_running_runs_eta_is_what_is_left_of_its_mean(
    client: TestClient, fake_conns: Connections, fresh_fleet: None
) -> None:
    run_id = submit(client)
    fake_conns.text.hset(keys.WORKFLOW_SECONDS, "invert", "20")
    start_run(fake_conns, run_id)
    fake_conns.text.hset(keys.run(run_id), "started_at", repr(time.time() - 5))
    eta = view(client, run_id)["eta_seconds"]
    assert eta is not None and 14.0 <= eta <= 15.0  # no worker needed: it holds one
    fake_conns.text.hset(keys.run(run_id), "started_at", repr(time.time() - 60))
    assert view(client, run_id)["eta_seconds"] == 0.0


def test_an_ended_run_has_no_eta(client: TestClient, fake_conns: Connections, fresh_fleet: None) -> None:
    run_id = submit(client)
    fake_conns.text.hset(keys.WORKFLOW_SECONDS, "invert", "20")
    beat(fake_conns, "gpu-a", healthy=True)
    finish_run(fake_conns, run_id)
    assert view(client, run_id)["eta_seconds"] is None


def test_a_single_run_has_no_batch(client: TestClient) -> None:
    run_id = submit(client)
    assert view(client, run_id)["batch_id"] is None
    assert client.get("/v1/runs").json()["runs"][0]["batch_id"] is None


def test_batch_runs_are_listed_with_their_batch(client: TestClient) -> None:
    single = submit(client)
    answer = client.post("/v1/runs/batch", json=[{"workflow": "invert", **BODY}] * 2).json()
    page = client.get("/v1/runs").json()["runs"]
    assert {run["id"] for run in page} == {single} | {i["run"]["id"] for i in answer["items"]}
    assert {run["batch_id"] for run in page} == {None, answer["batch_id"]}
