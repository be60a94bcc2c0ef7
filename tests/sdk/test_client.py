"""The blocking client against ``httpx.MockTransport``: retries, idempotency keys, problems, events, batches."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from comfy_dispatch_client import (
    ApiError,
    BadRequest,
    Client,
    ConfigError,
    Conflict,
    ConnectionFailed,
    DownloadFailed,
    Forbidden,
    InvalidRequest,
    NotFound,
    RateLimited,
    RetryPolicy,
    RunStatus,
    ServerError,
    ServiceUnavailable,
    Unauthorized,
    WaitTimeout,
)
from tests.sdk.fakes import API, Recorder, Sleeps, problem, refuse_connection, run_json, sse, sse_response

pytestmark = pytest.mark.timeout(10)


def client_of(recorder: Recorder, sleeps: Sleeps | None = None, **options: Any) -> Client:
    sleep = Sleeps() if sleeps is None else sleeps
    return Client(API, "cd_key", transport=recorder.transport(), sleep=sleep, env={}, **options)


def accepted(request: httpx.Request) -> httpx.Response:
    return httpx.Response(202, json=run_json())


# -- configuration and auth ----------------------------------------------------------------------------


def test_url_and_key_come_from_the_environment_when_not_given() -> None:
    env = {"COMFY_DISPATCH_API_URL": "https://dispatch.example.com/", "COMFY_DISPATCH_API_KEY": " cd_env "}
    with Client(env=env) as client:
        assert client.config.api_url == "https://dispatch.example.com"
        assert client.config.api_key == "cd_env"
    with Client("http://other:9000", "cd_arg", env=env) as client:
        assert (client.config.api_url, client.config.api_key) == ("http://other:9000", "cd_arg")


@pytest.mark.parametrize("url", ["ftp://x", "localhost:8000", "http://"])
def test_a_url_that_is_none_is_a_config_error_naming_it(url: str) -> None:
    with pytest.raises(ConfigError, match="COMFY_DISPATCH_API_URL"):
        Client(env={"COMFY_DISPATCH_API_URL": url})


def test_the_key_goes_as_a_bearer_token_to_the_api_only(tmp_path: Path) -> None:
    output = {"node": "3", "filename": "a.png", "url": "https://cdn.test/a.png", "content_type": "image/png", "size": 2}
    recorder = Recorder(
        httpx.Response(200, json=run_json(status="succeeded", outputs=[output])),
        httpx.Response(200, content=b"ab"),
    )
    with client_of(recorder) as client:
        client.download("r1", tmp_path)
    api, cdn = recorder.requests
    assert api.headers["authorization"] == "Bearer cd_key"
    assert "authorization" not in cdn.headers and "x-api-key" not in cdn.headers
    assert (tmp_path / "a.png").read_bytes() == b"ab"


# -- retries and idempotency keys ------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 503])
def test_429_and_503_are_retried_no_sooner_than_retry_after(status: int) -> None:
    sleeps = Sleeps()
    recorder = Recorder(problem(status, retry_after=3), problem(status, retry_after=1), accepted)
    with client_of(recorder, sleeps) as client:
        run = client.submit("invert", {"color": 1})
    assert run.id == "r1" and len(recorder.requests) == 3
    assert 3 <= sleeps[0] <= 6 and 1 <= sleeps[1] <= 2


def test_connection_failures_are_retried_with_growing_waits() -> None:
    sleeps = Sleeps()
    recorder = Recorder(refuse_connection, refuse_connection, refuse_connection, accepted)
    with client_of(recorder, sleeps, retry=RetryPolicy(base=1.0, cap=30)) as client:
        client.get("r1")
    assert len(sleeps) == 3
    assert 0.5 <= sleeps[0] <= 1 and 1 <= sleeps[1] <= 2 and 2 <= sleeps[2] <= 4


def test_a_retry_sends_the_same_idempotency_key() -> None:
    recorder = Recorder(refuse_connection, problem(503, retry_after=0), accepted)
    with client_of(recorder) as client:
        client.submit("invert", {"color": 1})
    keys = {r.headers["idempotency-key"] for r in recorder.requests}
    assert len(keys) == 1 and len(keys.pop()) == 36  # one uuid4, on every attempt
    assert [json.loads(r.content) for r in recorder.requests] == [{"params": {"color": 1}}] * 3


def test_the_callers_idempotency_key_is_sent_and_a_replay_is_told() -> None:
    replay = httpx.Response(200, json=run_json(status="succeeded"), headers={"Idempotent-Replayed": "true"})
    recorder = Recorder(replay)
    with client_of(recorder) as client:
        run = client.submit("invert", {}, priority="high", idempotency_key="file-1/line-7")
    assert recorder.requests[0].headers["idempotency-key"] == "file-1/line-7"
    assert json.loads(recorder.requests[0].content) == {"params": {}, "priority": "high"}
    assert run.replayed and run.status is RunStatus.SUCCEEDED


def test_retries_give_up_after_the_policys_attempts_with_the_last_error() -> None:
    recorder = Recorder(*[problem(429, "slow down", retry_after=0)] * 3)
    with client_of(recorder, retry=RetryPolicy(attempts=3)) as client, pytest.raises(RateLimited) as caught:
        client.get("r1")
    assert caught.value.retry_after == 0 and caught.value.detail == "slow down"


def test_a_retry_after_too_long_is_not_waited_for() -> None:
    sleeps = Sleeps()
    recorder = Recorder(problem(503, retry_after=3600))
    with client_of(recorder, sleeps) as client, pytest.raises(ServiceUnavailable):
        client.get("r1")
    assert sleeps == []


def test_other_errors_are_not_retried() -> None:
    recorder = Recorder(problem(500, "boom"))
    with client_of(recorder) as client, pytest.raises(ServerError):
        client.get("r1")
    assert len(recorder.requests) == 1


# -- problems ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, BadRequest),
        (401, Unauthorized),
        (403, Forbidden),
        (404, NotFound),
        (409, Conflict),
        (413, BadRequest),
        (422, InvalidRequest),
        (500, ServerError),
        (502, ServerError),
        (418, ApiError),
    ],
)
def test_a_problem_becomes_the_exception_of_its_status_with_its_members(status: int, kind: type[ApiError]) -> None:
    answer = problem(status, "what went wrong", instance="/v1/runs/r1", run_id="r1", errors=[{"param": "seed"}])
    with client_of(Recorder(answer)) as client, pytest.raises(kind) as caught:
        client.get("r1")
    error = caught.value
    assert type(error) is kind
    assert (error.status, error.type, error.title) == (status, f"https://errors.test/{status}", f"title {status}")
    assert (error.detail, error.instance) == ("what went wrong", "/v1/runs/r1")
    assert error.extensions == {"run_id": "r1"} and error.errors == [{"param": "seed"}]
    assert error.problem["detail"] == "what went wrong" and str(status) in str(error)


def test_an_error_page_that_is_not_json_keeps_its_text_as_detail() -> None:
    answer = httpx.Response(502, text="<html>Bad Gateway</html>", headers={"content-type": "text/html"})
    with client_of(Recorder(answer)) as client, pytest.raises(ServerError) as caught:
        client.get("r1")
    assert caught.value.detail == "<html>Bad Gateway</html>" and caught.value.type == "about:blank"


# -- waiting, listing -------------------------------------------------------------------------------------


def test_wait_long_polls_until_the_run_ends() -> None:
    recorder = Recorder(
        httpx.Response(200, json=run_json(status="running")), httpx.Response(200, json=run_json(status="succeeded"))
    )
    with client_of(recorder) as client:
        run = client.wait("r1", timeout=100)
    assert run.succeeded
    waits = [float(r.url.params["wait"]) for r in recorder.requests]
    assert all(0 < w <= 100 for w in waits) and recorder.requests[0].url.path == "/v1/runs/r1"


def test_wait_gives_up_at_its_timeout_with_the_run_as_last_seen() -> None:
    recorder = Recorder(*[httpx.Response(200, json=run_json(status="running"))] * 100)
    with client_of(recorder) as client, pytest.raises(WaitTimeout) as caught:
        client.wait("r1", timeout=0.001)
    assert caught.value.run.status is RunStatus.RUNNING


def test_list_runs_gives_a_page_and_iter_runs_follows_the_cursors() -> None:
    def page(ids: list[str], cursor: str | None) -> httpx.Response:
        return httpx.Response(200, json={"runs": [run_json(i) for i in ids], "next_cursor": cursor})

    recorder = Recorder(
        page(["a", "b"], "c2"),
        page(["a", "b"], "c2"),
        page([], "c3"),  # a filtered page may be empty and still not the last
        page(["c", "d"], "c4"),
    )
    with client_of(recorder) as client:
        first = client.list_runs(status="failed", workflow="invert", since=1700000000, limit=2)
        assert [r.id for r in first.runs] == ["a", "b"] and first.next_cursor == "c2"
        assert [r.id for r in client.iter_runs(status="failed", page_size=2, max_runs=3)] == ["a", "b", "c"]
    params = [dict(r.url.params) for r in recorder.requests]
    assert params[0] == {"status": "failed", "workflow": "invert", "since": "1700000000", "limit": "2"}
    assert params[2] == {"status": "failed", "limit": "1", "cursor": "c2"}
    assert params[3] == {"status": "failed", "limit": "1", "cursor": "c3"}


# -- downloads --------------------------------------------------------------------------------------------


def test_a_short_download_raises_and_leaves_no_file(tmp_path: Path) -> None:
    output = {"node": "3", "filename": "a.png", "url": f"{API}/o/a.png", "content_type": "image/png", "size": 10}
    run = run_json(status="succeeded", outputs=[output])
    recorder = Recorder(httpx.Response(200, json=run), httpx.Response(200, content=b"short"))
    with client_of(recorder, retry=RetryPolicy(attempts=1)) as client, pytest.raises(DownloadFailed, match="10"):
        client.download("r1", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_download_is_checked_against_the_sha256_when_the_api_gives_one(tmp_path: Path) -> None:
    output = {"node": "3", "filename": "../../a.png", "url": f"{API}/o/a.png", "content_type": "image/png", "size": 2}
    good = {**output, "sha256": "fb8e20fc2e4c3f248c60c39bd652f3c1347298bb977b8b4d5903b85055620603"}  # sha256(b"ab")
    bad = {**output, "sha256": "0" * 64}
    recorder = Recorder(httpx.Response(200, content=b"ab"), httpx.Response(200, content=b"ab"))
    from comfy_dispatch_client.models import Run

    with client_of(recorder, retry=RetryPolicy(attempts=1)) as client:
        (path,) = client.download(Run.from_json(run_json(status="succeeded", outputs=[good])), tmp_path)
        assert path == tmp_path / "a.png" and path.read_bytes() == b"ab"  # the name's last part only
        with pytest.raises(DownloadFailed, match="sha256"):
            client.download(Run.from_json(run_json(status="succeeded", outputs=[bad])), tmp_path / "x")
    assert not (tmp_path / "x" / "a.png").exists()


# -- events ----------------------------------------------------------------------------------------------


class BrokenStream(httpx.SyncByteStream):
    """Some bytes, then the connection breaks."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __iter__(self) -> Iterator[bytes]:
        yield self.data
        raise httpx.ReadError("connection reset by peer")


def test_events_resume_after_a_dropped_connection_and_an_api_restart_with_last_event_id() -> None:
    sleeps = Sleeps()
    first = sse(("1-0", "queued", {}), ("2-0", "started", {"attempt": 1}), comments=1)
    rest = sse(("3-0", "progress", {"progress": 0.5}), ("4-0", "done", {"status": "succeeded"}))
    recorder = Recorder(
        lambda r: httpx.Response(200, stream=BrokenStream(first), headers={"content-type": "text/event-stream"}),
        refuse_connection,  # the API restarting
        refuse_connection,
        sse_response(rest),
    )
    with client_of(recorder, sleeps) as client:
        events = list(client.events("r1"))
    expected = [("1-0", "queued"), ("2-0", "started"), ("3-0", "progress"), ("4-0", "done")]
    assert [(e.id, e.type) for e in events] == expected
    assert events[-1].terminal and events[2].data == {"progress": 0.5}
    assert ["last-event-id" in r.headers for r in recorder.requests] == [False, True, True, True]
    assert {r.headers.get("last-event-id") for r in recorder.requests[1:]} == {"2-0"}
    assert len(sleeps) == 3


def test_events_reconnect_when_a_stream_ends_before_the_terminal_event() -> None:
    recorder = Recorder(
        sse_response(sse(("1-0", "queued", {}))),
        sse_response(sse(("2-0", "canceled", {"status": "canceled"}))),
    )
    with client_of(recorder) as client:
        assert [e.type for e in client.events("r1", last_event_id="0-5")] == ["queued", "canceled"]
    assert [r.headers.get("last-event-id") for r in recorder.requests] == ["0-5", "1-0"]


def test_events_end_at_once_when_the_api_says_the_client_had_the_end() -> None:
    with client_of(Recorder(httpx.Response(204))) as client:
        assert list(client.events("r1", last_event_id="9-0")) == []


def test_events_of_an_unknown_run_raise_not_found_without_retrying() -> None:
    recorder = Recorder(problem(404, "no run r9"))
    with client_of(recorder) as client, pytest.raises(NotFound):
        list(client.events("r9"))


def test_events_give_up_after_the_policys_attempts_of_failed_connections() -> None:
    recorder = Recorder(*[refuse_connection] * 3)
    with client_of(recorder, retry=RetryPolicy(attempts=3)) as client, pytest.raises(ConnectionFailed):
        list(client.events("r1"))
    assert len(recorder.requests) == 3
