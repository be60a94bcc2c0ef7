"""``comfy-dispatch run`` through typer's runner, its client answered by ``httpx.MockTransport``: exit codes."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest
from typer.testing import CliRunner

from comfy_dispatch_client import Client, RetryPolicy
from dispatcher.cli import app, remote
from tests.sdk.fakes import API, Recorder, Sleeps, problem, refuse_connection, run_json

runner = CliRunner()
pytestmark = pytest.mark.timeout(10)


@pytest.fixture
def answers(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Recorder]:
    """Make the command's client answer with the given responses (one attempt per request: no retries)."""

    def install(*responses: httpx.Response | Callable[[httpx.Request], httpx.Response]) -> Recorder:
        recorder = Recorder(*responses)

        def connect(api_url: str | None, api_key: str | None) -> Client:
            retry = RetryPolicy(attempts=1)
            return Client(API, api_key, transport=recorder.transport(), retry=retry, sleep=Sleeps(), env={})

        monkeypatch.setattr(remote, "connect", connect)
        return recorder

    return install


def test_a_queued_run_prints_its_id_and_sends_typed_params(answers: Callable[..., Recorder]) -> None:
    recorder = answers(httpx.Response(202, json=run_json("r7")))
    result = runner.invoke(app, ["run", "txt2img", "-p", "prompt=a cat", "-p", "seed=7", "--priority", "high"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "r7\n"
    assert json.loads(recorder.requests[0].content) == {"params": {"prompt": "a cat", "seed": 7}, "priority": "high"}
    assert recorder.requests[0].url.path == "/v1/workflows/txt2img/runs"


@pytest.mark.parametrize(
    ("final", "code", "message"),
    [
        (run_json("r7", "succeeded"), 0, ""),
        (run_json("r7", "failed", error={"type": "execution", "message": "node 3 failed"}), 1, "node 3 failed"),
        (run_json("r7", "canceled"), 1, "canceled"),
    ],
)
def test_wait_exits_with_the_runs_fate(
    answers: Callable[..., Recorder], final: dict[str, object], code: int, message: str
) -> None:
    answers(httpx.Response(202, json=run_json("r7")), httpx.Response(200, json=final))
    result = runner.invoke(app, ["run", "invert", "--wait", "--json"])
    assert result.exit_code == code, result.output
    assert json.loads(result.stdout)["status"] == final["status"]
    assert message in result.stderr


@pytest.mark.parametrize(
    ("answer", "code", "message"),
    [
        (problem(401, "the API key is unknown"), 2, "401 title 401: the API key is unknown"),
        (problem(422, "color: must be an int"), 2, "color: must be an int"),
        (problem(500, "boom"), 1, "500"),
        (problem(429, "over the rate", retry_after=1), 1, "over the rate"),
        (refuse_connection, 1, "ConnectError"),
    ],
)
def test_errors_are_one_line_with_their_exit_code(
    answers: Callable[..., Recorder], answer: httpx.Response, code: int, message: str
) -> None:
    answers(answer)
    result = runner.invoke(app, ["run", "invert"])
    assert result.exit_code == code, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("comfy-dispatch: run of invert: ") and message in line
