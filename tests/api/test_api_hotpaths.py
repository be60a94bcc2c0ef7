"""api.hotpaths: the submission and an output's bytes, served in front of FastAPI's routes, answer exactly as the
documented routes do; a request in any other form is left to the documented route."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts, serialize_response

from api import hotpaths
from api.app import create_app
from api.hotpaths import VIEW
from api.views import Links, run_view
from dispatcher.connections import Connections
from dispatcher.runs import Output, RunStatus, new_run
from dispatcher.settings import load_settings
from dispatcher.storage import MemoryStore
from tests.api.helpers import TestClient, finish_run, store_output, tenant_with_key

# What differs between two runs submitted alike, one after the other: the run's own, its place in the queue, and
# what is left of the key's submission rate.
OWN = {"id", "created_at", "queue_position", "eta_seconds"}
VARYING_HEADERS = {"date", "location", "content-length", "ratelimit"}


def documented_only(app: FastAPI) -> FastAPI:
    app.router.routes[:] = [route for route in app.router.routes if not isinstance(route, hotpaths.HotPath)]
    return app


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths the hot paths served, from now on (in either app: the documented-only one has none)."""
    seen: list[str] = []

    async def spied(self: hotpaths.HotPath, scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["path"])
        await handle(self, scope, receive, send)

    handle = hotpaths.HotPath.handle
    monkeypatch.setattr(hotpaths.HotPath, "handle", spied)
    return seen


@pytest.fixture
def clients(fake_conns: Connections, store: MemoryStore, served: list[str]) -> Iterator[tuple[TestClient, TestClient]]:
    """(through the hot paths, through the documented routes only): two apps on the same Redis and store."""
    settings = load_settings({}, max_body_bytes=4096)
    hot = create_app(settings, conns=fake_conns, store=store)
    plain = documented_only(create_app(settings, conns=fake_conns, store=store))
    assert [route.method for route in hot.router.routes if isinstance(route, hotpaths.HotPath)] == ["POST", "GET"]
    with TestClient(hot) as a, TestClient(plain) as b:
        yield a, b


@pytest.fixture
def app_for_routes(fake_conns: Connections) -> FastAPI:
    return create_app(load_settings({}), conns=fake_conns, store=MemoryStore())


@pytest.fixture
def key(fake_conns: Connections) -> str:
    return tenant_with_key(fake_conns, "acme")


def answer(response: Any) -> tuple[int, str, dict[str, str], Any]:
    headers = {k: v for k, v in response.headers.items() if k not in VARYING_HEADERS}
    headers |= {k: "present" for k in VARYING_HEADERS - {"date", "content-length"} if k in response.headers}
    try:
        body: Any = response.json()
    except ValueError:
        body = response.content
    if isinstance(body, dict) and "id" in body and "location" in response.headers:  # a run's: its own
        assert response.headers["location"] == f"/v1/runs/{body['id']}"
    if isinstance(body, dict):
        body = {k: ("present" if k in OWN else v) for k, v in body.items()}
    return response.status_code, response.headers.get("content-type", ""), headers, body


@pytest.mark.parametrize(
    ("headers", "path", "body"),
    [
        ({}, "/v1/workflows/invert/runs", {"params": {"width": 8}}),  # no key: 401
        ({"X-API-KEY": "cd_nope"}, "/v1/workflows/invert/runs", {}),  # unknown key: 401
        (None, "/v1/workflows/nope/runs", {}),  # 404
        (None, "/v1/workflows/invert/runs", {"params": {"width": "wide"}}),  # 422, the parameter named
        (None, "/v1/workflows/invert/runs", {"priority": "urgent"}),  # 422
        (None, "/v1/workflows/invert/runs", [1, 2]),  # not an object
        (None, "/v1/workflows/invert/runs", {"params": {"prompt": "x" * 5000}}),  # over max_body_bytes: 413
        (None, "/v1/workflows/invert/runs", {"params": {"width": 8}}),  # 202
        (None, "/v1/workflows/invert/runs?wait=0.1", {"params": {"width": 8}}),  # 202 after the wait
        ({}, "/v1/workflows/invert/runs", {"params": {"prompt": "x" * 5000}}),  # the body is read first: 413
        ("read-only", "/v1/workflows/invert/runs", {}),  # 403, the scope named
    ],
)
def test_a_submission_is_answered_as_the_documented_route_answers(
    clients: tuple[TestClient, TestClient],
    key: str,
    fake_conns: Connections,
    served: list[str],
    headers: dict[str, str] | str | None,
    path: str,
    body: Any,
) -> None:
    hot, plain = clients
    if headers == "read-only":
        headers = {"X-API-KEY": tenant_with_key(fake_conns, "acme", scopes="read")}
    sent = {"X-API-KEY": key} if headers is None else headers
    assert isinstance(sent, dict)
    answers = [answer(client.post(path, content=json.dumps(body), headers=sent)) for client in (hot, plain)]
    assert answers[0] == answers[1]
    assert served == [path.split("?")[0]]  # the hot path answered the first, and only the first


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/v1/workflows/invert/runs"),  # 405
        ("POST", "/v1/workflows/invert/runs/"),  # a trailing slash
        ("POST", "/v1/workflows/invert/runs?wait=1e3"),  # the documented route judges other forms: 422
        ("POST", "/v1/workflows/invert/runs?wait=1&version=1"),
        ("HEAD", "/v1/runs/x/outputs/a.png"),
    ],
)
def test_other_forms_go_to_the_documented_route(
    clients: tuple[TestClient, TestClient], key: str, served: list[str], method: str, path: str
) -> None:
    hot, plain = clients
    answers = [
        answer(client.request(method, path, json={}, headers={"X-API-KEY": key}, follow_redirects=False))
        for client in (hot, plain)
    ]
    assert answers[0] == answers[1] and served == []


def test_a_bearer_key_and_a_stream_go_the_same_way(clients: tuple[TestClient, TestClient], key: str) -> None:
    hot, plain = clients
    bearer = {"Authorization": f"Bearer {key}"}
    answers = [answer(c.post("/v1/workflows/invert/runs", json={}, headers=bearer)) for c in (hot, plain)]
    assert answers[0] == answers[1] and answers[0][0] == 202
    streams = []
    for client in (hot, plain):
        with client.stream("POST", "/v1/workflows/invert/runs", json={"stream": True}, headers=bearer) as stream:
            kept = {k: v for k, v in stream.headers.items() if k not in VARYING_HEADERS}
            streams.append((stream.status_code, kept, "location" in stream.headers, "ratelimit" in stream.headers))
    assert streams[0] == streams[1] and streams[0][0] == 200
    assert streams[0][1]["content-type"].startswith("text/event-stream")


def test_an_output_is_answered_as_the_documented_route_answers(
    clients: tuple[TestClient, TestClient], key: str, fake_conns: Connections, store: MemoryStore, served: list[str]
) -> None:
    hot, plain = clients
    run_id = hot.post("/v1/workflows/invert/runs", json={}, headers={"X-API-KEY": key}).json()["id"]
    outputs = [store_output(store, run_id, name, b"\x89PNG bytes") for name in ("out put.png", "é✓.png")]
    finish_run(fake_conns, run_id, outputs=outputs)
    other = tenant_with_key(fake_conns, "other")
    for path, sent in [
        (f"/v1/runs/{run_id}/outputs/%C3%A9%E2%9C%93.png", {"X-API-KEY": key}),  # 200, the name as RFC 5987 says
        (f"/v1/runs/{run_id}/outputs/out%20put.png", {"X-API-KEY": key}),  # 200, the bytes
        (f"/v1/runs/{run_id}/outputs/out%20put.png?x=1", {"X-API-KEY": key}),  # a query it has no use for
        (f"/v1/runs/{run_id}/outputs/missing.png", {"X-API-KEY": key}),  # 404
        (f"/v1/runs/{run_id}/outputs/out%20put.png", {"X-API-KEY": other}),  # another tenant's: 404
        (f"/v1/runs/{run_id}/outputs/out%20put.png", {}),  # 401
        ("/v1/runs/x:graph/outputs/a.png", {"X-API-KEY": key}),  # not a run id
    ]:
        answers = [answer(client.get(path, headers=sent)) for client in (hot, plain)]
        assert answers[0] == answers[1], path
    assert hot.get(f"/v1/runs/{run_id}/outputs/out%20put.png", headers={"X-API-KEY": key}).content == b"\x89PNG bytes"
    assert len(served) == 1 + 7 + 1  # the submission, each output above once, and this one


@pytest.mark.parametrize(
    ("query", "headers", "taken"),
    [
        (b"", [], True),
        (b"wait=60", [], True),
        (b"wait=0.25", [], True),
        (b"wait=300", [], True),
        (b"wait=300.5", [], False),  # over the limit: the documented route's 422
        (b"wait=-1", [], False),
        (b"wait=1e2", [], False),
        (b"wait=abc", [], False),
        (b"wait=", [], False),
        (b"wait=1&wait=2", [], False),
        (b"version=1", [], False),
        (b"wait=1&version=1", [], False),
        (b"", [(b"idempotency-key", b"k")], False),
    ],
)
def test_only_the_plain_form_of_a_submission_is_taken(
    app_for_routes: FastAPI, query: bytes, headers: list[tuple[bytes, bytes]], taken: bool
) -> None:
    route = next(r for r in app_for_routes.router.routes if isinstance(r, hotpaths.HotPath) and r.method == "POST")
    scope = {"type": "http", "method": "POST", "path": "/v1/workflows/invert/runs", "query_string": query}
    scope["app"] = app_for_routes
    match, child = route.matches(scope | {"headers": headers})
    assert (match.name == "FULL") is taken
    if taken:  # the request's route is the documented one, whatever serves it
        assert isinstance(child["route"], APIRoute) and child["route"].path == "/v1/workflows/{workflow_id}/runs"
    other = route.matches(scope | {"headers": headers, "method": "GET"})[0]
    assert other.name == "NONE"  # another method: the documented route answers (405)


def test_a_run_view_is_serialized_as_fastapi_serializes_the_routes_model(app_for_routes: FastAPI) -> None:
    route = next(
        context.original_route
        for context in iter_route_contexts(app_for_routes.routes)
        if isinstance(context.original_route, APIRoute) and context.original_route.path == hotpaths.SUBMIT_PATH
    )
    assert isinstance(route, APIRoute)
    run = new_run("invert", {"width": 8, "note": "é ✓"}, priority="high", max_attempts=3, timeout=60.0)
    run.status, run.progress, run.gpu_seconds = RunStatus.SUCCEEDED, 1.0, 0.123456789
    run.outputs = [Output("3", "a b.png", "image/png", 10, f"{run.id}/1/a b.png")]
    view = run_view(run, queue_position=None, links=Links(base="http://testserver", store=MemoryStore()))
    serialized = serialize_response(field=route.response_field, response_content=view, dump_json=True)
    assert VIEW.dump_json(view, by_alias=True) == asyncio.run(serialized)
