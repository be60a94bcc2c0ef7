"""Run events as SSE on fakeredis: framing, history and resume, authorization, ``"stream": true`` (native, FlowAI).

Live delivery over a real socket is in tests/integration/test_sse.py; here every stream read has
ended (or ends while the test client reads it) because the run ended.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import fakeredis
import pytest
from fastapi import FastAPI

from api import sse
from api.app import create_app
from api.routes import events
from api.views import Links
from dispatcher import keys
from dispatcher.connections import Connections
from dispatcher.errors import ParameterError
from dispatcher.events import Event
from dispatcher.runs import Run
from dispatcher.settings import load_settings
from dispatcher.storage import MemoryStore
from tests.api.conftest import AfterSubmit
from tests.api.helpers import Backlog, TestClient, assert_problem, finish_run, tenant_with_key
from tests.events_helpers import Life, SseEvent, parse_sse


def use_fake_event_redis(app: FastAPI, conns: Connections) -> None:
    """Streams read the same fakeredis server as the app's sync clients."""
    server = conns.text.connection_pool.connection_kwargs["server"]
    app.state.event_redis = lambda: fakeredis.FakeAsyncRedis(server=server, decode_responses=True)


@pytest.fixture(autouse=True)
def fake_event_redis(app: FastAPI, fake_conns: Connections) -> None:
    use_fake_event_redis(app, fake_conns)


@pytest.fixture
def life_after_submit(after_submit: AfterSubmit, fake_conns: Connections) -> Callable[..., None]:
    """Arm it, and every later submit lives its life (``Life.whole``, or ``fail``) after ``delay``."""

    def arm(delay: float = 0.1, fail: str | None = None) -> None:
        def live(run: Run) -> None:  # the stream must be open first, for the events to arrive live
            life = Life(fake_conns.text, run.id)
            life.start().progress(0.5, "1").fail(fail) if fail else life.whole("a.png", "b.png")

        after_submit(live, delay)

    return arm


def submit(client: TestClient, body: dict[str, Any] | None = None, **headers: str) -> str:
    response = client.post("/v1/workflows/invert/runs", json=body or {}, headers=headers)
    assert response.status_code == 202, response.text
    run_id: str = response.json()["id"]
    return run_id


def read(response: Any) -> list[SseEvent]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    return list(parse_sse(response.text.split("\n")))


# -- framing (pure) -------------------------------------------------------------------------------------------------


def test_a_frame_has_id_event_and_one_data_line_per_line() -> None:
    assert sse.frame('{"a":1}', event="queued", id="5-0") == b'id: 5-0\nevent: queued\ndata: {"a":1}\n\n'
    assert sse.frame("x\ny") == b"data: x\ndata: y\n\n"
    assert sse.comment("keep-alive") == sse.KEEP_ALIVE


@pytest.mark.parametrize(("value", "expected"), [(None, None), ("", None), (" 17-3 ", "17-3"), ("0-0", "0-0")])
def test_event_ids_are_parsed(value: str | None, expected: str | None) -> None:
    assert sse.parse_event_id(value) == expected


@pytest.mark.parametrize("value", ["17", "abc", "1-2-3", "-1", "17-0 1"])
def test_malformed_event_ids_are_refused(value: str) -> None:
    with pytest.raises(ParameterError, match="Last-Event-ID"):
        sse.parse_event_id(value)


def test_public_data_hides_storage_keys_and_comfyui_addresses() -> None:
    links = Links(base="http://api", store=MemoryStore())
    output = Event("1-0", "output", {"node": "3", "filename": "a b.png", "key": "r/1/a b.png", "size": 3})
    assert sse.public_data(output, "r", links) == {
        "node": "3",
        "filename": "a b.png",
        "size": 3,
        "url": "http://api/v1/runs/r/outputs/a%20b.png",
        "kind": "file",  # an event written before kinds (no content type either): a file
    }
    started = Event("2-0", "started", {"attempt": 1, "worker": "w", "comfyui_url": "http://10.0.0.7:8188"})
    assert sse.public_data(started, "r", links) == {"attempt": 1, "worker": "w"}
    assert sse.event_time(Event("1700000000123-4", "done", {})) == 1700000000.123


# -- GET /v1/runs/{id}/events -------------------------------------------------------------------------------------


def test_an_ended_run_answers_its_whole_life_at_once(client: TestClient, fake_conns: Connections) -> None:
    run_id = submit(client)
    Life(fake_conns.text, run_id).whole("a.png")
    got = read(client.get(f"/v1/runs/{run_id}/events"))
    assert [e.event for e in got] == ["queued", "started", "progress", "progress", "output", "done"]
    ids = [e.id for e in got]
    assert ids == [i for i, _ in fake_conns.text.xrange(keys.run_events(run_id))]
    assert got[0].json() == {"workflow": "invert", "priority": "normal", "tenant": "default"}
    assert got[2].json() == {"progress": 0.5, "node": "1"}
    assert got[4].json()["url"] == f"http://testserver/v1/runs/{run_id}/outputs/a.png"
    assert "key" not in got[4].json()
    assert got[5].json() == {"status": "succeeded"}


@pytest.mark.parametrize("how", ["header", "query"])
def test_resume_after_an_event_id_gives_only_later_events(
    client: TestClient, fake_conns: Connections, how: str
) -> None:
    run_id = submit(client)
    Life(fake_conns.text, run_id).whole()
    everything = read(client.get(f"/v1/runs/{run_id}/events"))
    after = everything[1].id
    assert after is not None
    if how == "header":
        response = client.get(f"/v1/runs/{run_id}/events", headers={"Last-Event-ID": after})
    else:
        response = client.get(f"/v1/runs/{run_id}/events", params={"last_event_id": after})
    assert [e.id for e in read(response)] == [e.id for e in everything[2:]]


def test_a_client_that_had_the_end_gets_204(client: TestClient, fake_conns: Connections) -> None:
    run_id = submit(client)
    Life(fake_conns.text, run_id).start().fail("boom")
    got = read(client.get(f"/v1/runs/{run_id}/events"))
    assert got[-1].event == "error" and got[-1].json()["error"]["message"] == "boom"
    response = client.get(f"/v1/runs/{run_id}/events", headers={"Last-Event-ID": got[-1].id or ""})
    assert response.status_code == 204  # an EventSource stops reconnecting


def test_a_bad_last_event_id_is_a_422(client: TestClient) -> None:
    run_id = submit(client)
    problem = assert_problem(client.get(f"/v1/runs/{run_id}/events", headers={"Last-Event-ID": "yesterday"}), 422)
    assert problem["errors"][0]["param"] == "Last-Event-ID"


def test_a_bad_last_event_id_query_is_a_422_even_beside_a_good_header(client: TestClient) -> None:
    run_id = submit(client)
    url = f"/v1/runs/{run_id}/events?last_event_id=yesterday"
    problem = assert_problem(client.get(url, headers={"Last-Event-ID": "1700000000000-0"}), 422)
    assert problem["errors"][0]["param"] == "last_event_id"


def test_unknown_run_is_a_404(client: TestClient) -> None:
    assert_problem(client.get("/v1/runs/0123abcd/events"), 404)


def test_a_run_ended_without_a_terminal_event_still_ends_its_stream(
    client: TestClient, fake_conns: Connections, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events, "KEEPALIVE_SECONDS", 0.05)
    run_id = submit(client)
    finish_run(fake_conns, run_id, status="failed")  # the record only, as an older writer did
    got = read(client.get(f"/v1/runs/{run_id}/events"))
    assert [e.event for e in got] == ["queued", "error"]
    assert got[-1].id is None and got[-1].json() == {"status": "failed"}


def test_live_events_and_keep_alives(
    client: TestClient, life_after_submit: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events, "KEEPALIVE_SECONDS", 0.05)
    life_after_submit(delay=0.4)
    run_id = submit(client)
    got = read(client.get(f"/v1/runs/{run_id}/events"))
    assert any(e.comments == ["keep-alive"] for e in got)
    kinds = [e.event for e in got if not e.comments]
    assert kinds == ["queued", "started", "progress", "progress", "output", "output", "done"]


def test_another_tenants_run_is_a_404_and_read_scope_is_needed(fake_conns: Connections) -> None:
    app = create_app(load_settings({}, max_body_bytes=4096), conns=fake_conns, store=MemoryStore())
    use_fake_event_redis(app, fake_conns)
    acme, other = tenant_with_key(fake_conns, "acme"), tenant_with_key(fake_conns, "other")
    submit_only = tenant_with_key(fake_conns, "acme", scopes="submit")
    with TestClient(app) as client:
        run_id = submit(client, **{"X-API-KEY": acme})
        Life(fake_conns.text, run_id).whole()
        assert read(client.get(f"/v1/runs/{run_id}/events", headers={"X-API-KEY": acme}))[-1].event == "done"
        assert_problem(client.get(f"/v1/runs/{run_id}/events", headers={"X-API-KEY": other}), 404)
        assert_problem(client.get(f"/v1/runs/{run_id}/events", headers={"X-API-KEY": submit_only}), 403)
        assert_problem(client.get(f"/v1/runs/{run_id}/events"), 401)


# -- "stream": true -------------------------------------------------------------------------------------------------


def test_stream_true_answers_the_events_of_the_new_run(
    client: TestClient, life_after_submit: Callable[..., None]
) -> None:
    life_after_submit()
    response = client.post("/v1/workflows/invert/runs", json={"params": {"width": 8}, "stream": True})
    got = read(response)
    run_id = response.headers["Location"].rsplit("/", 1)[1]
    assert "RateLimit" in response.headers and "RateLimit-Policy" in response.headers
    assert [e.event for e in got] == ["queued", "started", "progress", "progress", "output", "output", "done"]
    assert got[4].json()["url"] == f"http://testserver/v1/runs/{run_id}/outputs/a.png"


@pytest.mark.parametrize("body", [{"stream": "yes"}, {"stream": 1}, {"params": {"width": -1}, "stream": True}])
def test_stream_with_a_bad_body_is_a_422_and_nothing_is_queued(
    client: TestClient, backlog: Backlog, body: dict[str, Any]
) -> None:
    assert_problem(client.post("/v1/workflows/invert/runs", json=body), 422)
    assert backlog.empty


def test_flowai_stream_speaks_flowais_events(client: TestClient, life_after_submit: Callable[..., None]) -> None:
    life_after_submit()
    got = read(client.post("/v1/api/workflow/run/invert", json={"input": {"width": 8}, "stream": True}))
    assert [e.event for e in got] == ["msg", "msg", "msg", "msg", "msg", "output"]
    messages = [e.json() for e in got[:-1]]
    assert messages[0]["Type"] == "start" and messages[0]["Data"]["width"] == 8
    assert [(m["Node"], m["Type"]) for m in messages[1:]] == [
        ("1", "start_node"),
        ("1", "finish_node"),
        ("2", "start_node"),
        ("2", "finish_node"),
    ]
    assert messages[1]["Msg"] == "Start node 1, type EmptyImage" and messages[1]["Data"] is None
    assert messages[2]["Data"]["time_spend"] >= 0
    output = got[-1].json()
    run_id = output["run_id"]
    assert output["output"] == [f"http://testserver/v1/runs/{run_id}/outputs/{n}" for n in ("a.png", "b.png")]
    assert output["total_time"] >= 0


def test_flowai_stream_of_a_failed_run_ends_with_an_error_event(
    client: TestClient, life_after_submit: Callable[..., None]
) -> None:
    life_after_submit(fail="node 2 raised OSError: disk full")
    got = read(client.post("/v1/api/workflow/run/invert", json={"input": {}, "stream": True}))
    assert [e.event for e in got] == ["msg", "msg", "error"]
    assert got[-1].json()["error"] == "node 2 raised OSError: disk full"
    assert got[-1].json()["status"] == "failed"
