"""The Flask seed's routes (/api/...) over our runs."""

from __future__ import annotations

import pytest

from api.compat.flask_seed import task_status
from api.views import Links
from dispatcher.connections import Connections
from dispatcher.runs import Output, RunStatus, new_run
from dispatcher.storage import MemoryStore
from tests.api.helpers import (
    PROBLEM_JSON,
    Backlog,
    TestClient,
    assert_problem,
    beat,
    finish_run,
    start_run,
    store_output,
)


def submit(client: TestClient, body: dict[str, object] | None = None) -> str:
    response = client.post("/api/workflow/txt2img", json=body or {"prompt": "a cat"})
    assert response.status_code == 200, response.text
    run_id: str = response.json()["prompt_id"]
    return run_id


def test_list_workflows(client: TestClient) -> None:
    workflows = client.get("/api/workflows").json()["workflows"]
    assert workflows == sorted(workflows) and {"invert", "txt2img"} <= set(workflows)


@pytest.mark.parametrize(
    "body",
    [
        {"prompt": "a cat", "target_node": "6"},
        {"prompt": "a cat"},
        {"6": {"inputs": {"text": "a cat"}}, "7": {"inputs": {"text": "blurry"}}},
    ],
)
def test_run_workflow_simple_and_advanced_forms(client: TestClient, backlog: Backlog, body: dict[str, object]) -> None:
    response = client.post("/api/workflow/txt2img", json=body)
    assert response.status_code == 200
    reply = response.json()
    assert reply["status"] == "success"
    assert reply["client_id"] == f"comfy-dispatch-{reply['prompt_id']}"
    assert client.get(f"/v1/runs/{reply['prompt_id']}").json()["params"]["prompt"] == "a cat"
    assert backlog.count == 1


def test_seed_errors_are_problems_with_error_and_status_code(client: TestClient, backlog: Backlog) -> None:
    problem = assert_problem(client.post("/api/workflow/txt2img", json={"prompt": "x", "target_node": "3"}), 422)
    assert problem["error"] == problem["detail"] == "target_node: Target node 3 is not a text input node"
    assert problem["status_code"] == 422
    problem = assert_problem(client.post("/api/workflow/missing", json={"prompt": "x"}), 404)
    assert problem["error"] == problem["detail"] and problem["status_code"] == 404
    problem = assert_problem(client.post("/api/workflow/txt2img", content=b"not json"), 400)
    assert problem["status_code"] == 400
    assert backlog.empty


def test_task_status_through_a_runs_life(client: TestClient, fake_conns: Connections, store: MemoryStore) -> None:
    first, second = submit(client), submit(client)
    assert client.get(f"/api/task_status/{second}").json() == {
        "status": "pending",
        "message": "Task is waiting in queue",
        "queue_position": 2,  # the seed counts from 1
    }
    start_run(fake_conns, first, node="3", progress=0.25)
    assert client.get(f"/api/task_status/{first}").json() == {
        "status": "running",
        "message": "Task is currently running",
        "execution_info": {"progress": 0.25, "node": "3"},
    }
    finish_run(fake_conns, first, outputs=[store_output(store, first, "cat.png", b"png")])
    done = client.get(f"/api/task_status/{first}").json()
    assert done["status"] == "completed"
    assert done["message"] == "Image generation completed"
    assert done["images"] == [
        {
            "url": f"http://testserver/v1/runs/{first}/outputs/cat.png",
            "filename": "cat.png",
            "subfolder": "",
            "type": "output",
        }
    ]
    assert done["execution_time"] == pytest.approx(2.5, abs=0.01)
    assert done["node_errors"] == {}
    error = {"type": "validation_error", "message": "Prompt outputs failed validation", "node_errors": {"3": {"x": 1}}}
    finish_run(fake_conns, second, status="failed", error=error)
    assert client.get(f"/api/task_status/{second}").json() == {
        "status": "error",
        "message": "Prompt outputs failed validation",
        "node_errors": {"3": {"x": 1}},
    }


def test_task_status_of_unknown_id_is_not_found(client: TestClient) -> None:
    response = client.get("/api/task_status/feedbeef")
    assert response.status_code == 404
    body = response.json()
    assert body["status"] == "not_found"
    assert body["status_code"] == 404 and "feedbeef" in body["error"]


def test_canceled_run_reports_error_without_node_errors() -> None:
    run = new_run("invert", {})
    run.status = RunStatus.CANCELED
    view = task_status(run, None, Links(base="http://x", store=MemoryStore()))
    assert view == {"status": "error", "message": "Task ended with status canceled", "node_errors": {}}


def test_history_lists_finished_runs_newest_first(
    client: TestClient, fake_conns: Connections, store: MemoryStore
) -> None:
    old, new, pending = submit(client), submit(client), submit(client)
    finish_run(fake_conns, old, outputs=[store_output(store, old, "a.png", b"a")])
    finish_run(fake_conns, new, status="failed", error={"message": "boom"})
    history = client.get("/api/history").json()
    assert list(history) == [new, old]  # the pending run is not history yet
    assert history[old]["status"] == {"status_str": "success", "completed": True, "messages": []}
    assert history[old]["outputs"]["9"]["images"][0]["filename"] == "a.png"
    assert history[new]["status"]["status_str"] == "error"
    assert list(client.get("/api/history?max_items=2").json()) == [new]
    assert client.get(f"/api/history/{old}").json()[old]["prompt_id"] == old
    assert client.get(f"/api/history/{pending}").json() == {}
    problem = assert_problem(client.get("/api/history/feedbeef"), 404)
    assert problem["status_code"] == 404 and problem["error"]


def test_image(client: TestClient, fake_conns: Connections, store: MemoryStore) -> None:
    run_id = submit(client)
    problem = assert_problem(client.get(f"/api/image/{run_id}"), 404)
    assert "no images" in problem["error"]
    finish_run(fake_conns, run_id, outputs=[store_output(store, run_id, "cat.png", b"png")])
    reply = client.get(f"/api/image/{run_id}").json()
    assert reply["status"] == "success"
    assert [i["filename"] for i in reply["images"]] == ["cat.png"]
    assert client.get(reply["images"][0]["url"]).content == b"png"


def test_test_comfy_reports_the_workers(client: TestClient, fake_conns: Connections) -> None:
    response = client.get("/api/test_comfy")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/json"
    assert response.json()["status"] == "error" and response.json()["response"] == {"workers": []}
    beat(fake_conns, "gpu-a", healthy=True)
    reply = client.get("/api/test_comfy").json()
    assert reply["status"] == "success"
    assert reply["comfyui_url"] == "http://gpu-a:8188"
    assert [w["name"] for w in reply["response"]["workers"]] == ["gpu-a"]


def test_unknown_route_under_api_gets_the_seed_members(client: TestClient) -> None:
    response = client.get("/api/nothing")
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json()["status_code"] == 404


def test_outputs_keep_their_subfolder_and_type(client: TestClient, fake_conns: Connections) -> None:
    run_id = submit(client)
    output = Output("9", "p.png", "image/png", 3, f"{run_id}/1/p.png", subfolder="previews", type="temp")
    finish_run(fake_conns, run_id, outputs=[output])
    image = client.get(f"/api/image/{run_id}").json()["images"][0]
    assert (image["subfolder"], image["type"]) == ("previews", "temp")
