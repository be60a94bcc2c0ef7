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


@pytest.mark.parametrize(
    ("status", "error", "code"),
    [
        (
            "failed",
            {"type": "execution_error", "message": "node 2 raised ValueError: bad", "exception_type": "ValueError"},
            422,
        ),
        ("failed", {"type": "validation_error", "message": "Prompt outputs failed validation"}, 422),
        ("failed", {"type": "RunTimeout", "message": "the run exceeded its time limit"}, 422),
        (
            "failed",
            {"type": "execution_error", "message": "out of memory", "exception_type": "torch.OutOfMemoryError"},
            503,
        ),
        ("failed", {"type": "ComfyUIUnavailable", "message": "GET /queue: connection refused"}, 503),
        ("failed", {"type": "OutputNotStored", "message": "S3 answered 503"}, 503),
        ("canceled", {"type": "canceled", "message": "canceled by request"}, 409),
    ],
)
def test_a_failed_run_answers_by_whose_fault_it_was(
    client: TestClient, finish_after_submit: Callable[..., None], status: str, error: dict[str, str], code: int
) -> None:
    """FlowAI's clients try a 5xx again: only a failure of the infrastructure is one, with Retry-After."""
    finish_after_submit(status=status, error=error)
    response = client.post("/v1/api/workflow/run/invert", json={"input": {}})
    problem = assert_problem(response, code)
    assert problem["detail"] == error["message"] and problem["run_error"] == error and problem["run_status"] == status
    assert ("Retry-After" in response.headers) == (code == 503)


def test_run_still_going_when_the_wait_ends(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """No error: the run was stored and goes on; trying again would run it twice."""
    monkeypatch.setattr(flowai, "WAIT_SECONDS", 0.2)
    response = client.post("/v1/api/workflow/run/invert", json={"input": {}})
    assert response.status_code == 202, response.text
    assert client.get(response.headers["Location"]).json()["status"] == "queued"  # the run goes on
    assert response.json()["run_id"] in response.headers["Location"]


def test_bad_input_is_a_422_naming_it(client: TestClient, backlog: Backlog) -> None:
    problem = assert_problem(client.post("/v1/api/workflow/run/invert", json={"input": {"width": -1}}), 422)
    assert problem["errors"][0]["param"] == "width"
    assert backlog.empty
