"""API keys on every route: 401 without one, 403 without the scope, 404 for another tenant's runs, 429 over the rate."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI

from api.app import create_app, serve
from api.auth import check_auth_binding, is_loopback
from dispatcher.apikeys import ApiKeyStore
from dispatcher.connections import Connections
from dispatcher.errors import ConfigError
from dispatcher.settings import load_settings
from dispatcher.storage import MemoryStore
from tests.api.helpers import Backlog, TestClient, assert_problem, beat, finish_run, store_output, tenant_with_key


@pytest.fixture
def app(fake_conns: Connections, store: MemoryStore) -> FastAPI:
    return create_app(load_settings({}, max_body_bytes=4096), conns=fake_conns, store=store)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def key(fake_conns: Connections) -> str:
    """A key of tenant "acme" with submit and read."""
    return tenant_with_key(fake_conns, "acme")


def h(key: str) -> dict[str, str]:
    return {"X-API-KEY": key}


def submit(client: TestClient, key: str) -> str:
    response = client.post("/v1/workflows/invert/runs", json={}, headers=h(key))
    assert response.status_code == 202, response.text
    run_id: str = response.json()["id"]
    return run_id


ROUTES = [
    ("GET", "/v1/workflows"),
    ("GET", "/v1/workflows/invert"),
    ("POST", "/v1/workflows/invert/runs"),
    ("GET", "/v1/runs/0123abcd"),
    ("GET", "/v1/runs/0123abcd/outputs/a.png"),
    ("GET", "/v1/queues"),
    ("GET", "/v1/workers"),
    ("GET", "/v1/usage"),
    ("GET", "/api/workflows"),
    ("POST", "/api/workflow/txt2img"),
    ("GET", "/api/task_status/0123abcd"),
    ("GET", "/api/history"),
    ("GET", "/api/image/0123abcd"),
    ("GET", "/api/test_comfy"),
    ("POST", "/api/open/v0/run"),
    ("GET", "/api/open/v0/check?id=0123abcd"),
    ("POST", "/v1/api/workflow/run/invert"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-API-KEY": "cdk_0123456789ab_" + "x" * 43},  # well formed, unknown
        {"X-API-KEY": "not-a-key"},
        {"Authorization": "Bearer "},
        {"Authorization": "Basic dXNlcjpwYXNz"},
    ],
)
def test_no_valid_key_is_a_401_with_a_challenge(
    client: TestClient, backlog: Backlog, method: str, path: str, headers: dict[str, str]
) -> None:
    response = client.request(method, path, json={"workflow_id": "invert"}, headers=headers)
    problem = assert_problem(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"
    assert problem["type"].endswith(":unauthorized")
    assert backlog.empty


def test_compat_401s_keep_their_products_members(client: TestClient) -> None:
    assert assert_problem(client.get("/api/workflows"), 401)["status_code"] == 401
    assert assert_problem(client.post("/api/open/v0/run", json={}), 401)["success"] is False


@pytest.mark.parametrize("header", ["X-API-KEY", "Authorization"])
def test_either_header_carries_the_key(client: TestClient, key: str, header: str) -> None:
    value = key if header == "X-API-KEY" else f"Bearer {key}"
    assert client.get("/v1/workflows", headers={header: value}).status_code == 200
    assert client.get("/v1/workflows", headers={header: value[:-1] + "!"}).status_code == 401


def test_revoked_key_is_a_401_at_once(client: TestClient, fake_conns: Connections, key: str) -> None:
    assert client.get("/v1/workflows", headers=h(key)).status_code == 200
    assert ApiKeyStore(fake_conns.text).revoke(key.split("_")[1])
    assert_problem(client.get("/v1/workflows", headers=h(key)), 401)


def test_probes_and_docs_stay_open(client: TestClient) -> None:
    for path in ("/healthz", "/readyz", "/docs", "/openapi.json"):
        assert client.get(path).status_code == 200, path


def test_openapi_documents_both_headers(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert (schemes["ApiKey"]["type"], schemes["ApiKey"]["in"], schemes["ApiKey"]["name"]) == (
        "apiKey",
        "header",
        "X-API-KEY",
    )
    assert schemes["Bearer"]["scheme"] == "bearer"
    security = spec["paths"]["/v1/workflows/{workflow_id}/runs"]["post"]["security"]
    assert {"ApiKey": []} in security and {"Bearer": []} in security
    assert "security" not in spec["paths"]["/healthz"]["get"]


@pytest.mark.parametrize(
    ("scopes", "method", "path", "needed"),
    [
        ("read", "POST", "/v1/workflows/invert/runs", "submit"),
        ("read", "POST", "/api/workflow/txt2img", "submit"),
        ("read", "POST", "/api/open/v0/run", "submit"),
        ("read", "POST", "/v1/api/workflow/run/invert", "submit"),
        ("submit", "GET", "/v1/workflows", "read"),
        ("submit", "GET", "/v1/runs/0123abcd", "read"),
        ("read", "POST", "/v1/runs/0123abcd/cancel", "submit"),
        ("submit", "GET", "/api/task_status/0123abcd", "read"),
        ("submit,read", "GET", "/v1/queues", "admin"),
        ("submit,read", "GET", "/v1/workers", "admin"),
        ("submit", "GET", "/v1/usage", "read"),
        ("submit,read", "GET", "/v1/usage?tenant=globex", "admin"),
    ],
)
def test_missing_scope_is_a_403_naming_it(
    client: TestClient, fake_conns: Connections, backlog: Backlog, scopes: str, method: str, path: str, needed: str
) -> None:
    key = tenant_with_key(fake_conns, "acme", scopes)
    body = {"workflow_id": "invert", "prompt": "x"}
    problem = assert_problem(client.request(method, path, json=body, headers=h(key)), 403)
    assert problem["required_scope"] == needed
    assert backlog.empty


def test_admin_sees_queues_and_workers(client: TestClient, fake_conns: Connections) -> None:
    key = tenant_with_key(fake_conns, "ops", "admin")
    assert client.get("/v1/queues", headers=h(key)).json()["total"] == 0
    assert client.get("/v1/workers", headers=h(key)).json() == {"workers": []}


def test_the_flask_seeds_comfyui_check_shows_the_workers_to_admins_only(
    client: TestClient, fake_conns: Connections, key: str
) -> None:
    beat(fake_conns, "gpu-a", healthy=True, current_run="run-of-another-tenant")
    reply = client.get("/api/test_comfy", headers=h(key)).json()
    assert reply["status"] == "success" and reply["response"] == {"workers_healthy": 1, "workers_total": 1}
    assert "run-of-another-tenant" not in json.dumps(reply) and "gpu-a" not in json.dumps(reply)
    admin = client.get("/api/test_comfy", headers=h(tenant_with_key(fake_conns, "ops", "read,admin"))).json()
    assert [w["name"] for w in admin["response"]["workers"]] == ["gpu-a"]
    assert admin["comfyui_url"] == "http://gpu-a:8188"


def test_runs_belong_to_the_keys_tenant(client: TestClient, fake_conns: Connections, key: str) -> None:
    run_id = submit(client, key)
    assert fake_conns.text.hget(f"cd:run:{run_id}", "tenant") == "acme"
    assert fake_conns.text.zcard("cd:backlog:acme:normal") == 1
    # Another key of the same tenant sees it.
    _, same = ApiKeyStore(fake_conns.text).create("acme", "read")
    assert client.get(f"/v1/runs/{run_id}", headers=h(same)).json()["id"] == run_id


def test_another_tenants_run_does_not_exist(
    client: TestClient, fake_conns: Connections, store: MemoryStore, key: str
) -> None:
    run_id = submit(client, key)
    finish_run(fake_conns, run_id, outputs=[store_output(store, run_id, "a.png", b"png")])
    assert client.get(f"/v1/runs/{run_id}/outputs/a.png", headers=h(key)).content == b"png"
    other = h(tenant_with_key(fake_conns, "globex"))
    assert_problem(client.post(f"/v1/runs/{run_id}/cancel", headers=other), 404)
    for path in (
        f"/v1/runs/{run_id}",
        f"/v1/runs/{run_id}?wait=30",  # not waited for: answered at once
        f"/v1/runs/{run_id}/outputs/a.png",
        f"/api/history/{run_id}",
        f"/api/image/{run_id}",
        f"/api/open/v0/check?id={run_id}",
    ):
        problem = assert_problem(client.get(path, headers=other), 404)
        assert problem["detail"] == f"run {run_id!r} does not exist", path
    seed = client.get(f"/api/task_status/{run_id}", headers=other)
    assert seed.status_code == 404 and seed.json()["status"] == "not_found"
    assert client.get("/api/history", headers=other).json() == {}
    assert list(client.get("/api/history", headers=h(key)).json()) == [run_id]


def test_comflowy_token_is_a_token_of_its_own_that_serves_as_bearer(
    client: TestClient, fake_conns: Connections, key: str
) -> None:
    assert assert_problem(client.get("/api/open/v0/auth/token?ppt=nope"), 401)["success"] is False
    reply = client.get("/api/open/v0/auth/token", params={"ppt": key}).json()
    token = reply["access_token"]
    assert token.startswith("cdt_") and key not in token and reply["expires_in"] == 3600
    record = fake_conns.text.hgetall(f"cd:token:{token.split('_')[1]}")
    assert token not in json.dumps(record) and record["key_id"] == key.split("_")[1]  # kept hashed only
    assert 3590 < fake_conns.text.ttl(f"cd:token:{token.split('_')[1]}") <= 3600
    bearer = {"Authorization": f"Bearer {token}"}
    reply = client.post("/api/open/v0/run", json={"workflow_id": "invert", "params": {}}, headers=bearer)
    assert reply.status_code == 200, reply.text
    run_id = reply.json()["data"]["run_id"]
    assert client.get(f"/api/open/v0/check?id={run_id}", headers=bearer).json()["data"]["status"] == "waiting"
    assert client.get(f"/v1/runs/{run_id}", headers={"X-API-KEY": token}).status_code == 200  # anywhere a key is
    assert_problem(client.get(f"/v1/runs/{run_id}", headers={"X-API-KEY": token[:-1] + "x"}), 401)


def test_a_token_dies_with_its_key(client: TestClient, fake_conns: Connections, key: str) -> None:
    token = client.get("/api/open/v0/auth/token", params={"ppt": key}).json()["access_token"]
    assert client.get("/v1/workflows", headers=h(token)).status_code == 200
    ApiKeyStore(fake_conns.text).revoke(key.split("_")[1])
    assert_problem(client.get("/v1/workflows", headers=h(token)), 401)


def test_an_expired_token_is_refused(client: TestClient, fake_conns: Connections, key: str) -> None:
    token = client.get("/api/open/v0/auth/token", params={"ppt": key}).json()["access_token"]
    fake_conns.text.hset(f"cd:token:{token.split('_')[1]}", "expires_at", repr(time.time() - 1))
    assert_problem(client.get("/v1/workflows", headers=h(token)), 401)


def test_over_the_rate_is_a_429_with_ratelimit_fields(
    client: TestClient, fake_conns: Connections, backlog: Backlog
) -> None:
    key = tenant_with_key(fake_conns, "slow", submit_rate=0.01, submit_burst=2)
    first = client.post("/v1/workflows/invert/runs", json={}, headers=h(key))
    assert first.status_code == 202
    assert first.headers["ratelimit-policy"] == '"submit";q=2;w=200'
    assert first.headers["ratelimit"] == '"submit";r=1;t=0'
    assert "retry-after" not in first.headers
    seed = client.post("/api/workflow/txt2img", json={"prompt": "x"}, headers=h(key))
    assert seed.headers["ratelimit"].startswith('"submit";r=0;t=')
    denied = client.post("/v1/workflows/invert/runs", json={}, headers=h(key))
    problem = assert_problem(denied, 429)
    assert problem["type"].endswith(":rate-limited")
    assert 99 <= int(denied.headers["retry-after"]) <= 100 == problem["retry_after"]
    assert denied.headers["ratelimit"] == f'"submit";r=0;t={denied.headers["retry-after"]}'
    assert denied.headers["ratelimit-policy"] == '"submit";q=2;w=200'
    compat = client.post("/api/open/v0/run", json={"workflow_id": "invert"}, headers=h(key))
    assert assert_problem(compat, 429)["success"] is False and "retry-after" in compat.headers
    assert backlog.count == 2 and backlog.records == 2  # the refused ones stored nothing


@pytest.mark.parametrize(
    "refused",
    [
        {"params": {"width": "wide"}},  # a bad parameter: refused before the script that admits and stores
        {"stream": "yes"},  # a bad run option: refused before the workflow is looked up
    ],
    ids=["bad-parameter", "bad-option"],
)
def test_a_refused_submission_counts_and_over_the_rate_is_a_429_first(
    client: TestClient, fake_conns: Connections, backlog: Backlog, refused: dict[str, object]
) -> None:
    key = tenant_with_key(fake_conns, "hasty", submit_rate=0.01, submit_burst=2)
    assert client.post("/v1/workflows/invert/runs", json=refused, headers=h(key)).status_code == 422
    assert client.post("/v1/workflows/invert/runs", json={}, headers=h(key)).headers["ratelimit"] == (
        '"submit";r=0;t=100'  # the refused one took its unit from the bucket
    )
    assert_problem(client.post("/v1/workflows/invert/runs", json=refused, headers=h(key)), 429)
    assert_problem(client.post("/v1/workflows/unknown/runs", json={}, headers=h(key)), 429)
    assert backlog.count == 1


def test_a_full_tenant_queue_is_a_429(client: TestClient, fake_conns: Connections, backlog: Backlog) -> None:
    key = tenant_with_key(fake_conns, "small", max_queued=1)
    submit(client, key)
    response = client.post("/v1/workflows/invert/runs", json={}, headers=h(key))
    problem = assert_problem(response, 429)
    assert problem["type"].endswith(":queue-full") and problem["max_queued"] == 1
    assert response.headers["retry-after"] == "1"
    assert backlog.count == 1 and backlog.records == 1


def test_auth_disabled_is_the_default_tenant_with_every_scope(fake_conns: Connections, store: MemoryStore) -> None:
    app = create_app(load_settings({}, auth="disabled"), conns=fake_conns, store=store)
    with TestClient(app) as client:
        run_id = submit(client, "ignored")
        assert client.get("/v1/queues").json()["total"] == 1
    assert fake_conns.text.hget(f"cd:run:{run_id}", "tenant") == "default"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("api.example.com", False),
    ],
)
def test_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_auth_disabled_is_refused_off_loopback() -> None:
    disabled = load_settings({}, auth="disabled")
    check_auth_binding(disabled, "127.0.0.1")
    check_auth_binding(load_settings({}), "0.0.0.0")  # with auth on, any address
    with pytest.raises(ConfigError) as caught:
        serve(disabled, "0.0.0.0", 8000)  # refused before building anything
    assert caught.value.setting == "COMFY_DISPATCH_AUTH"


def test_a_key_is_read_once_then_remembered_until_revoked(
    app: FastAPI, client: TestClient, fake_conns: Connections, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = app.state.services.key_cache
    deadline = time.monotonic() + 5
    while not cache.enabled and time.monotonic() < deadline:  # the app's subscription to revocations is up
        time.sleep(0.01)
    assert cache.enabled
    reads: list[str] = []
    original = fake_conns.aio.hgetall

    async def counting(name: str) -> Any:
        reads.append(name)
        return await original(name)

    monkeypatch.setattr(fake_conns.aio, "hgetall", counting)
    for _ in range(3):
        assert client.get("/v1/workflows", headers=h(key)).status_code == 200
    assert [r for r in reads if r.startswith("cd:apikey:")] == [f"cd:apikey:{key.split('_')[1]}"]
    assert ApiKeyStore(fake_conns.text).revoke(key.split("_")[1])  # published: every API process forgets it
    deadline = time.monotonic() + 5
    while cache.get(key) is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert_problem(client.get("/v1/workflows", headers=h(key)), 401)
