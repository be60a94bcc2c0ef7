"""FlowAI's synchronous run (POST /v1/api/workflow/run/{id}) over our runs."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from api.compat import flowai
from tests.api.helpers import Backlog, TestClient, assert_problem


def test_run_waits_and_answers_the_output_urls(client: TestClient, finish_after_submit: Callable[..., None]) -> None:
    finish_after_submit(files={"a.png": b"a", "b.png": b"b"})
    response = client.post("/v1/api/workflow/run/invert", json={"input": {"width": 32}})
    assert response.status_code == 200, response.text
    reply = response.json()
    run_id = reply["run_id"]
    assert reply["output"] == [
        f"http://testserver/v1/runs/{run_id}/outputs/a.png",
        f"http://testserver/v1/runs/{run_id}/outputs/b.png",
    ]
    assert reply["total_time"] >= 0
    assert client.get(f"/v1/runs/{run_id}").json()["params"]["width"] == 32


def test_failed_run_is_a_problem_with_the_run_error(
    client: TestClient, finish_after_submit: Callable[..., None]
) -> None:
    error = {"type": "execution_error", "message": "node 2 raised OSError: disk full"}
    finish_after_submit(status="failed", error=error)
    problem = assert_problem(client.post("/v1/api/workflow/run/invert", json={"input": {}}), 502)
    assert problem["detail"] == "node 2 raised OSError: disk full"
    assert problem["run_error"] == error
    assert problem["run_status"] == "failed"


def test_run_still_going_when_the_wait_ends(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(flowai, "WAIT_SECONDS", 0.2)
    problem = assert_problem(client.post("/v1/api/workflow/run/invert", json={"input": {}}), 504)
    assert client.get(problem["run_url"]).json()["status"] == "queued"  # the run goes on


def test_bad_input_is_a_422_naming_it(client: TestClient, backlog: Backlog) -> None:
    problem = assert_problem(client.post("/v1/api/workflow/run/invert", json={"input": {"width": -1}}), 422)
    assert problem["errors"][0]["param"] == "width"
    assert backlog.empty
