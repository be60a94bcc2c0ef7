"""Published workflows: PUT /v1/workflows/{id}, its versions, ?version= on runs, DELETE."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from api.app import create_app
from dispatcher import keys
from dispatcher.connections import Connections
from dispatcher.settings import Settings
from dispatcher.storage import MemoryStore
from dispatcher.workflows import Registry, load_workflow
from tests.api.helpers import TestClient, assert_problem, tenant_with_key

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
GRAPH: dict[str, Any] = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"filename_prefix": "p", "images": ["2", 0]}},
}
MANIFEST = {"params": {"size": {"targets": [{"node": "1", "input": "width"}, {"node": "1", "input": "height"}],
                                "type": "int", "default": 64, "min": 8, "max": 256}}}  # fmt: skip


def graph_of(conns: Connections, run_id: str) -> dict[str, Any]:
    return json.loads(conns.text.get(keys.run_graph(run_id)) or "{}")  # type: ignore[arg-type]


def test_a_put_publishes_version_1_then_2_and_runs_use_the_latest(client: TestClient, fake_conns: Connections) -> None:
    first = client.put("/v1/workflows/tiny", json={"graph": GRAPH, "manifest": MANIFEST})
    assert first.status_code == 201 and first.headers["location"] == "/v1/workflows/tiny"
    assert first.json()["version"] == 1 and first.json()["source"] == "api" and not first.json()["inferred"]
    changed = {**GRAPH, "1": {**GRAPH["1"], "inputs": {**GRAPH["1"]["inputs"], "color": 255}}}
    second = client.put("/v1/workflows/tiny", json={"graph": changed, "manifest": MANIFEST})
    assert second.status_code == 201 and second.json()["version"] == 2

    run = client.post("/v1/workflows/tiny/runs", json={"params": {"size": 32}}).json()
    assert run["workflow_version"] == 2
    assert graph_of(fake_conns, run["id"])["1"]["inputs"] == {"width": 32, "height": 32, "batch_size": 1, "color": 255}
    old = client.post("/v1/workflows/tiny/runs?version=1", json={}).json()
    assert old["workflow_version"] == 1 and graph_of(fake_conns, old["id"])["1"]["inputs"]["color"] == 0

    versions = client.get("/v1/workflows/tiny/versions").json()
    assert versions["latest"] == 2 and versions["retired"] is False
    assert [v["version"] for v in versions["versions"]] == [1, 2]
    assert all(v["source"] == "api" and v["created_at"].endswith("Z") for v in versions["versions"])
    assert client.get("/v1/workflows/tiny?version=1").json()["graph"]["1"]["inputs"]["color"] == 0
    assert "tiny" in {w["id"] for w in client.get("/v1/workflows").json()["workflows"]}


def test_the_same_graph_and_manifest_again_publish_nothing(client: TestClient) -> None:
    assert client.put("/v1/workflows/tiny", json={"graph": GRAPH}).status_code == 201
    again = client.put("/v1/workflows/tiny", json={"graph": GRAPH})
    assert again.status_code == 200 and again.json()["version"] == 1


def test_a_bare_graph_gets_its_manifest_inferred(client: TestClient) -> None:
    body = client.put("/v1/workflows/bare", json=GRAPH).json()
    assert body["inferred"] is True and body["version"] == 1
    assert client.get("/v1/workflows/bare/versions").json()["versions"][0]["inferred"] is True


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"graph": {"1": {"inputs": {}}}}, "class_type"),
        ({"graph": GRAPH, "manifest": {"params": {"x": {"node": "9", "input": "a", "type": "int"}}}}, "'9'"),
        ({"graph": GRAPH, "manifest": {"nope": 1}}, "unknown field"),
        ({"graph": GRAPH, "extra": 1}, "unknown field"),
        ({"manifest": MANIFEST}, "needs its graph"),
        ({"graph": {"1": {"class_type": "X", "inputs": {"a": ["7", 0]}}}}, "missing node"),
        ({"graph": []}, "non-empty object"),
    ],
)
def test_an_invalid_publication_is_a_422_naming_what_is_wrong(
    client: TestClient, body: dict[str, Any], detail: str
) -> None:
    problem = assert_problem(client.put("/v1/workflows/tiny", json=body), 422)
    assert problem["type"].endswith("invalid-workflow") and detail in problem["detail"]
    assert_problem(client.get("/v1/workflows/tiny"), 404)  # nothing stored


def test_a_bad_id_or_duplicate_keys_are_refused(client: TestClient) -> None:
    assert client.put("/v1/workflows/has%20space", json={"graph": GRAPH}).status_code == 422
    raw = '{"graph": {"1": {"class_type": "A", "inputs": {}}, "1": {"class_type": "B", "inputs": {}}}}'
    problem = assert_problem(client.put("/v1/workflows/dup", content=raw), 422)
    assert "twice" in problem["detail"]
    assert_problem(client.put("/v1/workflows/empty", content=b""), 400)


def test_delete_retires_new_runs_and_a_put_brings_it_back(client: TestClient) -> None:
    client.put("/v1/workflows/tiny", json={"graph": GRAPH})
    queued = client.post("/v1/workflows/tiny/runs", json={}).json()
    assert client.delete("/v1/workflows/tiny").status_code == 204
    assert client.delete("/v1/workflows/tiny").status_code == 204  # idempotent
    assert assert_problem(client.post("/v1/workflows/tiny/runs", json={}), 410)["type"].endswith("workflow-retired")
    assert_problem(client.get("/v1/workflows/tiny"), 410)
    assert "tiny" not in {w["id"] for w in client.get("/v1/workflows").json()["workflows"]}
    assert client.get("/v1/workflows/tiny/versions").json()["retired"] is True
    assert client.get(f"/v1/runs/{queued['id']}").json()["status"] == "queued"  # already queued: still runs
    back = client.put("/v1/workflows/tiny", json={"graph": GRAPH})
    assert back.status_code == 201 and back.json()["version"] == 2
    assert client.post("/v1/workflows/tiny/runs", json={}).status_code == 202
    assert_problem(client.delete("/v1/workflows/nope"), 404)


def test_an_unknown_version_is_a_404_and_a_bad_one_a_422(client: TestClient) -> None:
    assert assert_problem(client.post("/v1/workflows/invert/runs?version=9", json={}), 404)["detail"].endswith(
        "has no version 9"
    )
    assert_problem(client.post("/v1/workflows/invert/runs?version=0", json={}), 422)
    assert_problem(client.post("/v1/workflows/invert/runs", json={"version": "x"}), 422)
    assert_problem(client.post("/v1/workflows/invert/runs?version=1", json={"version": 2}), 422)
    assert client.post("/v1/workflows/invert/runs", json={"version": 1}).json()["workflow_version"] == 1
    assert_problem(client.get("/v1/workflows/invert?version=3"), 404)


def test_publishing_needs_the_admin_scope(settings: Settings, fake_conns: Connections) -> None:
    app = create_app(settings.model_copy(update={"auth": "enabled"}), conns=fake_conns, store=MemoryStore())
    key = tenant_with_key(fake_conns, "acme", scopes="submit,read")
    with TestClient(app) as client:
        headers = {"X-API-KEY": key}
        assert_problem(client.put("/v1/workflows/tiny", json={"graph": GRAPH}, headers=headers), 403)
        assert_problem(client.delete("/v1/workflows/invert", headers=headers), 403)


def test_bundled_workflows_are_version_1_and_an_edited_folder_adds_one(
    settings: Settings, fake_conns: Connections, app: FastAPI
) -> None:
    with TestClient(app) as client:
        assert client.get("/v1/workflows/invert/versions").json()["latest"] == 1
    edited = load_workflow(WORKFLOWS / "invert")
    graph = {**edited.graph, "1": {**edited.graph["1"], "inputs": {**edited.graph["1"]["inputs"], "color": 7}}}
    restarted = create_app(settings, conns=fake_conns, registry=Registry([replace(edited, graph=graph)]))
    with TestClient(restarted) as client:
        versions = client.get("/v1/workflows/invert/versions").json()
        assert versions["latest"] == 2 and [v["source"] for v in versions["versions"]] == ["bundled", "bundled"]
        # published over the API since: a restart with the folder as it was does not overwrite it
        client.put("/v1/workflows/invert", json={"graph": GRAPH})
    again = create_app(settings, conns=fake_conns, registry=Registry([edited]))
    with TestClient(again) as client:
        assert client.get("/v1/workflows/invert/versions").json()["latest"] == 3
        assert client.get("/v1/workflows/invert").json()["source"] == "api"


def test_a_redis_restarted_empty_gets_the_bundled_workflows_again(client: TestClient, fake_conns: Connections) -> None:
    assert client.get("/v1/workflows/invert").status_code == 200
    fake_conns.text.flushall()
    assert client.post("/v1/workflows/invert/runs", json={}).json()["workflow_version"] == 1
    fake_conns.text.flushall()
    assert "invert" in {w["id"] for w in client.get("/v1/workflows").json()["workflows"]}


def registry_of(app: FastAPI) -> Any:
    return app.state.services.registry


def test_two_replicas_never_serve_a_version_built_before_redis_lost_it(
    settings: Settings, fake_conns: Connections
) -> None:
    first, second = (create_app(settings, conns=fake_conns, store=MemoryStore()) for _ in range(2))
    with TestClient(first) as a, TestClient(second) as b:
        a.put("/v1/workflows/tiny", json={"graph": GRAPH})
        assert b.get("/v1/workflows/tiny").json()["graph"]["1"]["inputs"]["color"] == 0  # b built version 1
        fake_conns.text.flushall()  # Redis restarted empty: version numbers start again
        recolored = {**GRAPH, "1": {**GRAPH["1"], "inputs": {**GRAPH["1"]["inputs"], "color": 9}}}
        assert a.put("/v1/workflows/tiny", json={"graph": recolored}).json()["version"] == 1
        for client in (a, b):
            run = client.post("/v1/workflows/tiny/runs", json={}).json()
            assert run["workflow_version"] == 1 and graph_of(fake_conns, run["id"])["1"]["inputs"]["color"] == 9


def test_a_bundled_folder_published_before_adds_no_version_again(settings: Settings, fake_conns: Connections) -> None:
    # A rolling deploy: an old host restarting with the folder as it was must not flip the latest version back.
    old = load_workflow(WORKFLOWS / "invert")
    new = replace(old, graph={**old.graph, "1": {**old.graph["1"], "inputs": {**old.graph["1"]["inputs"], "color": 7}}})
    for bundled, latest in [(old, 1), (new, 2), (old, 2), (new, 2)]:
        with TestClient(create_app(settings, conns=fake_conns, registry=Registry([bundled]))) as client:
            assert client.get("/v1/workflows/invert/versions").json()["latest"] == latest


def test_a_replica_learns_a_version_published_through_another_before_sizing_a_body(
    settings: Settings, fake_conns: Connections
) -> None:
    first, second = (create_app(settings, conns=fake_conns, store=MemoryStore()) for _ in range(2))
    with TestClient(first) as a, TestClient(second) as b:
        a.put("/v1/workflows/tiny", json={"graph": GRAPH})
        assert b.post("/v1/workflows/tiny/runs", json={}).status_code == 202  # b knows version 1: no image
        with_image = {
            **GRAPH,
            "4": {"class_type": "LoadImage", "inputs": {"image": "x.png"}},
            "2": {"class_type": "ImageInvert", "inputs": {"image": ["4", 0]}},
        }
        assert a.put("/v1/workflows/tiny", json={"graph": with_image}).json()["params"]["image"]["type"] == "image"
        big = "A" * (settings.max_body_bytes + 10)  # more than a body without images may carry
        response = b.post("/v1/workflows/tiny/runs", json={"params": {"image": big}})
        assert response.status_code == 422, response.text  # read and judged as an image, not refused as too large
        assert registry_of(second).peek("tiny").version == 2


@pytest.mark.parametrize("version", ["²", "1" * 3000, "-1", "1.5", True, [1]])
def test_a_malformed_version_is_a_422(client: TestClient, version: Any) -> None:
    problem = assert_problem(client.post("/v1/workflows/invert/runs", json={"version": version}), 422)
    assert problem["errors"][0]["param"] == "version"


def test_the_same_version_in_the_query_and_the_body_is_one(client: TestClient) -> None:
    assert client.post("/v1/workflows/invert/runs?version=1", json={"version": "1"}).status_code == 202


def test_a_retire_after_redis_lost_the_workflows_finds_the_bundled_one(
    client: TestClient, fake_conns: Connections
) -> None:
    client.get("/v1/workflows/invert")
    fake_conns.text.flushall()
    assert client.delete("/v1/workflows/invert").status_code == 204
    assert_problem(client.post("/v1/workflows/invert/runs", json={}), 410)


def test_batch_items_name_their_version(client: TestClient) -> None:
    client.put("/v1/workflows/tiny", json={"graph": GRAPH})
    client.put("/v1/workflows/tiny", json={"graph": GRAPH, "manifest": MANIFEST})
    items = [{"workflow": "tiny", "version": 1}, {"workflow": "tiny"}, {"workflow": "tiny", "version": 3}]
    answer = client.post("/v1/runs/batch", json={"runs": items}).json()
    assert [i["status"] for i in answer["items"]] == [202, 202, 404]
    assert [i["run"]["workflow_version"] for i in answer["items"][:2]] == [1, 2]


def test_a_replica_binds_a_run_again_when_another_published_or_retired_since(
    settings: Settings, fake_conns: Connections
) -> None:
    # b binds runs to the version it last read, with no read of its own: the script storing the run checks that
    # version is still the latest, and if not, b reads the workflow again and binds the run anew, under its id.
    first, second = (create_app(settings, conns=fake_conns, store=MemoryStore()) for _ in range(2))
    with TestClient(first) as a, TestClient(second) as b:
        a.put("/v1/workflows/tiny", json={"graph": GRAPH, "manifest": MANIFEST})
        assert b.post("/v1/workflows/tiny/runs", json={}).json()["workflow_version"] == 1
        recolored = {**GRAPH, "1": {**GRAPH["1"], "inputs": {**GRAPH["1"]["inputs"], "color": 9}}}
        assert a.put("/v1/workflows/tiny", json={"graph": recolored, "manifest": MANIFEST}).json()["version"] == 2
        assert registry_of(second).peek("tiny").version == 1  # b has not read it
        run = b.post("/v1/workflows/tiny/runs", json={"params": {"size": 16}}).json()
        assert run["workflow_version"] == 2 and graph_of(fake_conns, run["id"])["1"]["inputs"]["color"] == 9
        assert run["params"] == {"size": 16}
        assert fake_conns.text.llen(keys.RECENT_RUNS) == 2  # stored once
        assert a.delete("/v1/workflows/tiny").status_code == 204
        assert_problem(b.post("/v1/workflows/tiny/runs", json={}), 410)
        assert fake_conns.text.llen(keys.RECENT_RUNS) == 2


def test_a_stale_replica_takes_a_body_only_the_new_version_fits(settings: Settings, fake_conns: Connections) -> None:
    # b knows version 1, which has no "color": the refusal is checked against the latest version before it is
    # answered, and the run is bound to version 2.
    first, second = (create_app(settings, conns=fake_conns, store=MemoryStore()) for _ in range(2))
    with TestClient(first) as a, TestClient(second) as b:
        a.put("/v1/workflows/tiny", json={"graph": GRAPH, "manifest": MANIFEST})
        assert b.post("/v1/workflows/tiny/runs", json={}).status_code == 202
        color = {"type": "int", "default": 0, "targets": [{"node": "1", "input": "color"}]}
        with_color = {"params": {**MANIFEST["params"], "color": color}}
        assert a.put("/v1/workflows/tiny", json={"graph": GRAPH, "manifest": with_color}).json()["version"] == 2
        for _ in range(2):  # and again: b has learned it
            run = b.post("/v1/workflows/tiny/runs", json={"params": {"color": 5}})
            assert run.status_code == 202, run.text
            assert (
                run.json()["workflow_version"] == 2
                and graph_of(fake_conns, run.json()["id"])["1"]["inputs"]["color"] == 5
            )
        assert b.post("/v1/workflows/tiny/runs", json={"params": {"colour": 5}}).status_code == 422


def test_an_image_parameter_of_a_version_read_since_is_checked(settings: Settings, fake_conns: Connections) -> None:
    # Version 2 makes node 4's image a parameter: a stale replica binding the run again checks it as an image
    # (address rules included), as the up-to-date one does.
    first, second = (create_app(settings, conns=fake_conns, store=MemoryStore()) for _ in range(2))
    loads = {**GRAPH, "4": {"class_type": "LoadImage", "inputs": {"image": "x.png"}}}
    loads["2"] = {"class_type": "ImageInvert", "inputs": {"image": ["4", 0]}}
    with TestClient(first) as a, TestClient(second) as b:
        a.put("/v1/workflows/tiny", json={"graph": loads, "manifest": MANIFEST})
        assert b.post("/v1/workflows/tiny/runs", json={}).json()["workflow_version"] == 1
        init = {"type": "image", "targets": [{"node": "4", "input": "image"}]}
        manifest = {"params": {**MANIFEST["params"], "init": init}}
        assert a.put("/v1/workflows/tiny", json={"graph": loads, "manifest": manifest}).json()["version"] == 2
        body = {"params": {"init": "http://127.0.0.1:6379/x.png"}}
        for client in (a, b):
            problem = assert_problem(client.post("/v1/workflows/tiny/runs", json=body), 422)
            assert problem["errors"][0]["param"] == "init", problem
        assert fake_conns.text.llen(keys.RECENT_RUNS) == 1


def test_a_refused_run_of_a_version_not_built_here_counts_against_the_rate(
    settings: Settings, fake_conns: Connections
) -> None:
    first = create_app(settings, conns=fake_conns, store=MemoryStore())
    second = create_app(settings.model_copy(update={"auth": "enabled"}), conns=fake_conns, store=MemoryStore())
    with TestClient(first) as a, TestClient(second) as b:
        a.put("/v1/workflows/tiny", json={"graph": GRAPH, "manifest": MANIFEST})
        a.put("/v1/workflows/tiny", json={"graph": GRAPH})
        key = tenant_with_key(fake_conns, "hasty", submit_rate=0.01, submit_burst=2)
        for _ in range(2):  # version 1 is not built on b: each refusal still takes a unit
            refused = b.post("/v1/workflows/tiny/runs?version=1", json={"params": []}, headers={"X-API-KEY": key})
            assert refused.status_code == 422, refused.text
        assert_problem(b.post("/v1/workflows/tiny/runs", json={}, headers={"X-API-KEY": key}), 429)
