"""Any ComfyUI workflow in, through real processes: ComfyUI's default text-to-image graph dropped into workflows/
with no manifest runs with named parameters (the graph the fake ComfyUI was given shows where they landed); the
same graph saved from ComfyUI's editor (UI format) is pushed with the CLI and converted by the API with the node
definitions its workers published; the CLI's push, list and show, and its one-line errors."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.cli.helpers import cli
from tests.support_stack import LocalStack, submit

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "workflows"
API_GRAPH: dict[str, Any] = json.loads((FIXTURES / "default_graph.api.json").read_text())
ROOT = Path(__file__).resolve().parents[2]


def posted_graph(fake_url: str, run_id: str) -> dict[str, Any]:
    """The graph the fake ComfyUI was given for ``run_id`` (bind() puts the run id in every filename_prefix)."""
    for entry in requests.get(f"{fake_url}/history", timeout=10).json().values():
        graph: dict[str, Any] = entry["prompt"][2]
        if any(run_id in str(node["inputs"].get("filename_prefix", "")) for node in graph.values()):
            return graph
    raise AssertionError(f"no prompt of run {run_id} in the fake's history")


def workflows_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "workflows"
    shutil.copytree(ROOT / "workflows" / "invert", folder / "invert")
    (folder / "default").mkdir()
    (folder / "default" / "workflow.json").write_text(json.dumps(API_GRAPH, indent=2))  # no manifest.json
    return folder


def wait_for_definitions(api: str) -> None:
    """Until a worker has published what its ComfyUI can run (node definitions included)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        workers = requests.get(f"{api}/v1/workers", timeout=10).json()["workers"]
        if any(w.get("capabilities") for w in workers):
            return
        time.sleep(0.1)
    raise AssertionError("no worker published its capabilities")


def test_the_default_graph_without_a_manifest_runs_with_named_parameters(redis_url: str, tmp_path: Path) -> None:
    env = {"COMFY_DISPATCH_WORKFLOWS_DIR": str(workflows_dir(tmp_path))}
    with LocalStack(redis_url, tmp_path, workers=1, env=env) as stack:
        session = requests.Session()
        shown = session.get(f"{stack.api}/v1/workflows/default", timeout=10).json()
        assert shown["inferred"] is True and {"prompt", "seed", "steps", "checkpoint"} <= set(shown["params"])
        run_id = submit(session, stack.api, "default", {"params": {"prompt": "a lighthouse", "seed": 3}})
        run = session.get(f"{stack.api}/v1/runs/{run_id}?wait=30", timeout=40).json()
        assert run["status"] == "succeeded", f"{run}\n{stack.logs()}"  # a str: shown whole
        assert run["outputs"] and run["outputs"][0]["content_type"] == "image/png"
        graph = posted_graph(stack.fakes[0].url, run_id)
        sampler = graph["3"]["inputs"]
        assert graph["3"]["class_type"] == "KSampler" and sampler["seed"] == 3
        positive, negative = sampler["positive"][0], sampler["negative"][0]
        assert graph[positive]["class_type"] == "CLIPTextEncode" and graph[positive]["inputs"]["text"] == "a lighthouse"
        assert graph[negative]["inputs"]["text"] == API_GRAPH[negative]["inputs"]["text"]  # untouched
        assert sampler["steps"] == API_GRAPH["3"]["inputs"]["steps"]


def test_the_cli_pushes_a_ui_format_graph_the_api_converts(redis_url: str, tmp_path: Path) -> None:
    with LocalStack(redis_url, tmp_path, workers=1) as stack:
        wait_for_definitions(stack.api)
        pushed = cli(["workflows", "push", str(FIXTURES / "default_graph.ui.json"), "--id", "from-editor"], stack.api)
        assert pushed.returncode == 0, (pushed.stdout, pushed.stderr, stack.logs())
        assert pushed.stdout.startswith("published: from-editor version 1"), pushed.stdout
        shown = cli(["workflows", "show", "from-editor", "--json"], stack.api)
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["graph"] == API_GRAPH  # the same API graph as ComfyUI's own export

        again = cli(["workflows", "push", str(FIXTURES / "default_graph.ui.json"), "--id", "from-editor"], stack.api)
        assert again.returncode == 0 and again.stdout.startswith("unchanged: from-editor version 1"), again.stdout
        args = ["run", "from-editor", "-p", "prompt=a lighthouse", "-p", "seed=3", "--workflow-version", "1"]
        ran = cli([*args, "--wait", "--json"], stack.api)
        assert ran.returncode == 0, (ran.stdout, ran.stderr)
        assert json.loads(ran.stdout)["workflow_version"] == 1

        folder = tmp_path / "tiny"
        shutil.copytree(ROOT / "workflows" / "invert", folder)
        assert cli(["workflows", "push", str(folder)], stack.api).returncode == 0
        listed = cli(["workflows", "list"], stack.api)
        assert listed.returncode == 0 and {"from-editor", "tiny", "invert"} <= {
            line.split("\t")[0] for line in listed.stdout.splitlines()
        }
        versions = cli(["workflows", "show", "tiny", "--versions"], stack.api)
        assert versions.returncode == 0 and versions.stdout.startswith("v1\t"), versions.stdout
        described = cli(["workflows", "show", "tiny"], stack.api)
        assert described.returncode == 0 and "color\tint\toptional" in described.stdout, described.stdout


def test_infer_converts_a_ui_graph_with_a_comfyuis_own_definitions(redis_url: str, tmp_path: Path) -> None:
    with LocalStack(redis_url, tmp_path, workers=1, start_workers=False) as stack:
        ui = str(FIXTURES / "default_graph.ui.json")
        done = cli(["workflows", "infer", ui, "--comfyui-url", stack.fakes[0].url], stack.api)
        assert done.returncode == 0, done.stderr
        manifest = json.loads(done.stdout)
        assert manifest["params"]["prompt"]["node"] == "6" and manifest["params"]["seed"]["node"] == "3"
        # the fake's /object_info gives the sampler's choices: what its ComfyUI takes
        assert "euler" in manifest["params"]["sampler"]["choices"]


def test_cli_errors_are_one_line(redis_url: str, tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"1": {"class_type": "X"')
    with LocalStack(redis_url, tmp_path, workers=1, start_workers=False) as stack:
        for args, message in [
            (["workflows", "push", str(tmp_path / "nope.json")], "no such file"),
            (["workflows", "push", str(broken)], "invalid JSON"),
            (["workflows", "push", str(FIXTURES / "default_graph.ui.json")], "Export (API)"),  # no worker: no defs
            (["workflows", "show", "nope"], "404"),
            (["workflows", "show", "invert", "--version", "7"], "no version 7"),
        ]:
            done = cli(args, stack.api)
            assert done.returncode == 2, (args, done.stdout, done.stderr)
            (line,) = done.stderr.strip().splitlines()
            assert line.startswith("comfy-dispatch: ") and message in line, line
