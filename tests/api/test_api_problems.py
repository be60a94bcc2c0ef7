"""Every error as an RFC 9457 problem: 400, 404, 405, 413, 422, 503 and the last-resort 500."""

from __future__ import annotations

from collections.abc import Iterator

import fakeredis
import pytest
from fastapi import FastAPI

from api.app import create_app
from api.body import parse_object
from dispatcher.errors import BadRequest
from dispatcher.settings import Settings
from dispatcher.storage import MemoryStore
from tests.api.helpers import Backlog, TestClient, assert_problem
from tests.conftest import fake_connections


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        (b"{bad", "not valid JSON"),
        (b"[1, 2]", "not an array"),
        (b'"text"', "not a string"),
        (b'{"params": {"width": NaN}}', "NaN is not valid JSON"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_malformed_body_is_a_400(client: TestClient, backlog: Backlog, raw: bytes, detail: str) -> None:
    response = client.post("/v1/workflows/invert/runs", content=raw, headers={"Content-Type": "application/json"})
    problem = assert_problem(response, 400)
    assert detail in problem["detail"]
    assert backlog.empty


@pytest.mark.parametrize(
    ("raw", "expected"), [(b"", {}), (b"  \n", {}), (b'{"a": 1}', {"a": 1}), (b'{"a": "\xc3\xa9"}', {"a": "\u00e9"})]
)
def test_parse_object(raw: bytes, expected: dict[str, object]) -> None:
    assert parse_object(raw) == expected


@pytest.mark.parametrize("raw", [b"1", b"null", b"true", b"{"])
def test_parse_object_refuses_what_is_not_an_object(raw: bytes) -> None:
    with pytest.raises(BadRequest):
        parse_object(raw)


def test_body_over_the_limit_is_refused_by_content_length(client: TestClient, backlog: Backlog) -> None:
    body = b'{"params": {"pad": "' + b"x" * 5000 + b'"}}'
    problem = assert_problem(client.post("/v1/workflows/invert/runs", content=body), 413)
    assert problem["max_body_bytes"] == 4096
    assert backlog.empty


def test_chunked_body_over_the_limit_is_refused_while_reading(client: TestClient, backlog: Backlog) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"params": {"pad": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}}'

    response = client.post("/v1/workflows/invert/runs", content=chunks())
    assert "content-length" not in response.request.headers  # really sent chunked
    assert_problem(response, 413)
    assert backlog.empty


def test_chunked_body_under_the_limit_is_read(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"params": '
        yield b'{"width": 64}}'

    response = client.post("/v1/workflows/invert/runs", content=chunks())
    assert response.status_code == 202, response.text
    assert response.json()["params"]["width"] == 64


def test_unknown_route_is_a_404_problem(client: TestClient) -> None:
    problem = assert_problem(client.get("/v2/anything"), 404)
    assert problem["type"] == "about:blank"
    assert problem["instance"] == "/v2/anything"


def test_wrong_method_is_a_405_problem_with_allow(client: TestClient) -> None:
    response = client.delete("/v1/workflows")
    assert_problem(response, 405)
    assert response.headers["allow"] == "GET"
    assert_problem(client.get("/v1/workflows/invert/runs"), 405)


def test_allow_names_the_methods_of_every_route_at_the_path(client: TestClient) -> None:
    # /api/open/v0/check is two routes (GET and POST); Starlette alone would name the first one's method only.
    response = client.put("/api/open/v0/check")
    assert "allowed: GET, POST" in assert_problem(response, 405)["detail"]
    assert response.headers["allow"] == "GET, POST"


def test_query_validation_is_a_422_problem_naming_the_parameter(client: TestClient) -> None:
    problem = assert_problem(client.get("/v1/runs/abc?wait=soon"), 422)
    assert problem["errors"][0]["param"] == "wait"
    assert problem["detail"].startswith("wait: ")


def test_redis_down_is_a_503_problem(settings: Settings) -> None:
    server = fakeredis.FakeServer()
    conns = fake_connections(server)
    server.connected = False
    with TestClient(create_app(settings, conns=conns, store=MemoryStore())) as client:
        response = client.get("/readyz")
        assert_problem(response, 503)
        assert response.headers["retry-after"] == "5"
        assert_problem(client.get("/v1/queues"), 503)
        assert_problem(client.post("/v1/workflows/invert/runs", json={}), 503)
        assert client.get("/healthz").json() == {"status": "ok"}  # liveness does not depend on Redis


def test_a_bug_is_a_500_problem_that_reveals_nothing(app: FastAPI) -> None:
    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret internals")

    with TestClient(app, raise_server_exceptions=False) as client:
        problem = assert_problem(client.get("/boom"), 500)
    assert "secret" not in problem["detail"]


def test_openapi_documents_the_routes(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert "/v1/workflows/{workflow_id}/runs" in spec["paths"]
    assert "requestBody" in spec["paths"]["/v1/workflows/{workflow_id}/runs"]["post"]
    assert client.get("/docs").status_code == 200
