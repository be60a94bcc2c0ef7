"""GET /v1/workflows and /v1/workflows/{id}."""

from __future__ import annotations

from tests.api.helpers import TestClient, assert_problem


def test_list_workflows_describes_each_bundled_workflow(client: TestClient) -> None:
    response = client.get("/v1/workflows")
    assert response.status_code == 200
    workflows = {w["id"]: w for w in response.json()["workflows"]}
    assert {"invert", "txt2img"} <= set(workflows)
    assert workflows["invert"]["params"]["width"] == {
        "type": "int",
        "required": False,
        "default": 512,
        "min": 1,
        "max": 4096,
        "description": "image width in pixels",
    }
    assert workflows["txt2img"]["params"]["prompt"]["required"] is True


def test_get_workflow(client: TestClient) -> None:
    response = client.get("/v1/workflows/invert")
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == "invert"
    assert set(body) == {
        "id", "version", "description", "params", "inferred", "created_at", "source", "manifest", "graph",
        "capable_workers",
    }  # fmt: skip
    assert body["version"] == 1 and body["source"] == "bundled" and body["inferred"] is False
    assert body["graph"]["2"]["class_type"] == "ImageInvert" and set(body["manifest"]["params"]) == set(body["params"])
    assert body["capable_workers"] is None  # no worker has said what its ComfyUI can run
    assert set(body["params"]) == {"width", "height", "color"}


def test_unknown_workflow_is_a_404_problem(client: TestClient) -> None:
    body = assert_problem(client.get("/v1/workflows/nope"), 404)
    assert "nope" in body["detail"]
    assert body["instance"] == "/v1/workflows/nope"
    assert body["type"].endswith("workflow-not-found")
