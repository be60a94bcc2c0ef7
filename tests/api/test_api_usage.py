"""GET /v1/usage: runs and GPU-seconds per UTC day, the key's own tenant, or any for an admin key."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi import FastAPI

from api.app import create_app
from dispatcher import keys
from dispatcher.connections import Connections
from dispatcher.settings import load_settings
from dispatcher.storage import MemoryStore
from dispatcher.usage import usage_day
from tests.api.helpers import TestClient, assert_problem, tenant_with_key


@pytest.fixture
def app(fake_conns: Connections, store: MemoryStore) -> FastAPI:
    return create_app(load_settings({}), conns=fake_conns, store=store)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


def spent(conns: Connections, tenant: str, day: str, runs: int, gpu: float) -> None:
    """What the scripts that end attempts write (see tests/unit/test_usage.py for those)."""
    conns.text.hset(keys.usage(tenant, day), mapping={"runs": runs, "gpu_seconds": gpu})


def test_a_tenant_sees_its_own_days(client: TestClient, fake_conns: Connections) -> None:
    key = tenant_with_key(fake_conns, "acme", "read")
    spent(fake_conns, "acme", "2026-11-02", 3, 1.5)
    spent(fake_conns, "acme", "2026-11-04", 2, 0.25)
    spent(fake_conns, "globex", "2026-11-02", 50, 99.0)
    reply = client.get("/v1/usage?from=2026-11-01&to=2026-11-04", headers={"X-API-KEY": key})
    assert reply.status_code == 200, reply.text
    assert reply.json() == {
        "tenant": "acme",
        "days": [
            {"date": "2026-11-01", "runs": 0, "gpu_seconds": 0.0},
            {"date": "2026-11-02", "runs": 3, "gpu_seconds": 1.5},
            {"date": "2026-11-03", "runs": 0, "gpu_seconds": 0.0},
            {"date": "2026-11-04", "runs": 2, "gpu_seconds": 0.25},
        ],
        "total": {"runs": 5, "gpu_seconds": 1.75},
    }


def test_the_last_30_days_by_default(client: TestClient, fake_conns: Connections) -> None:
    key = tenant_with_key(fake_conns, "acme", "read")
    today = usage_day(time.time())
    spent(fake_conns, "acme", today, 1, 0.5)
    days = client.get("/v1/usage", headers={"X-API-KEY": key}).json()["days"]
    first = (datetime.now(UTC).date() - timedelta(days=29)).isoformat()
    assert len(days) == 30 and days[0]["date"] == first and days[-1] == {"date": today, "runs": 1, "gpu_seconds": 0.5}


def test_an_admin_may_name_a_tenant(client: TestClient, fake_conns: Connections) -> None:
    admin = tenant_with_key(fake_conns, "ops", "read,admin")
    spent(fake_conns, "globex", "2026-11-02", 50, 99.0)
    reply = client.get("/v1/usage?tenant=globex&from=2026-11-02&to=2026-11-02", headers={"X-API-KEY": admin})
    assert reply.json()["tenant"] == "globex" and reply.json()["total"] == {"runs": 50, "gpu_seconds": 99.0}
    own = client.get("/v1/usage?tenant=acme&from=2026-11-02&to=2026-11-02", headers={"X-API-KEY": admin})
    assert own.json()["total"] == {"runs": 0, "gpu_seconds": 0.0}


def test_naming_its_own_tenant_needs_no_admin(client: TestClient, fake_conns: Connections) -> None:
    key = tenant_with_key(fake_conns, "acme", "read")
    assert client.get("/v1/usage?tenant=acme", headers={"X-API-KEY": key}).status_code == 200


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("from=2026-11-31", "from"),
        ("to=tomorrow", "to"),
        ("from=2026-12-02&to=2026-12-01", "from"),
        ("from=2020-01-01&to=2026-01-01", "from"),
        ("tenant=no%20such%20name", "tenant"),
    ],
)
def test_bad_queries_are_422_naming_the_parameter(
    client: TestClient, fake_conns: Connections, query: str, param: str
) -> None:
    admin = tenant_with_key(fake_conns, "ops", "read,admin")
    problem = assert_problem(client.get(f"/v1/usage?{query}", headers={"X-API-KEY": admin}), 422)
    assert problem["errors"][0]["param"] == param
