"""Published workflows through real processes: two API replicas on one Redis; a version published through one is
what the next run through the other runs, with no restart; runs queued before keep the version they were bound to
(the graphs the fake ComfyUI was given say so)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests

from dispatcher.redis_server import free_port
from tests.support import Proc, wait_http
from tests.support_stack import LocalStack, submit

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def graph(color: int) -> dict[str, Any]:
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": color}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"filename_prefix": "versions", "images": ["2", 0]}},
    }


def posted_colors(fake_url: str) -> dict[str, int]:
    """Run id -> the EmptyImage color of the graph the fake ComfyUI was given for it (from its /history)."""
    colors = {}
    for entry in requests.get(f"{fake_url}/history", timeout=10).json().values():
        prompt = entry["prompt"][2]
        prefix = prompt["3"]["inputs"]["filename_prefix"]  # bind() puts the run id in it
        colors[prefix.split("/")[-1].split("_")[-1]] = prompt["1"]["inputs"]["color"]
    return colors


def test_a_version_published_on_one_replica_runs_through_the_other(redis_url: str, tmp_path: Path) -> None:
    with LocalStack(redis_url, tmp_path, workers=1, exec_seconds=0.4) as stack:
        port = free_port()
        other = Proc(["api", "--port", str(port)], tmp_path / "api-2.log", stack.env).start()
        try:
            second = f"http://127.0.0.1:{port}"
            wait_http(second + "/readyz")
            session = requests.Session()
            put = session.put(f"{stack.api}/v1/workflows/versions", json={"graph": graph(0)}, timeout=10)
            assert put.status_code == 201 and put.json()["version"] == 1, put.text
            old = [submit(session, second, "versions", {}) for _ in range(4)]  # one executes, three wait

            put = session.put(f"{stack.api}/v1/workflows/versions", json={"graph": graph(0x3779B1)}, timeout=10)
            assert put.status_code == 201 and put.json()["version"] == 2, put.text
            waiting = session.get(f"{second}/v1/runs/{old[-1]}", timeout=10).json()
            assert waiting["status"] != "succeeded"  # still to run when the new version came
            new = submit(session, second, "versions", {})  # at once, through the other replica

            for run_id in [*old, new]:
                run = session.get(f"{second}/v1/runs/{run_id}?wait=30", timeout=40).json()
                assert run["status"] == "succeeded", f"{run}\n{stack.logs()}"  # a str: shown whole
            views = {r: session.get(f"{stack.api}/v1/runs/{r}", timeout=10).json() for r in [*old, new]}
            assert [views[r]["workflow_version"] for r in old] == [1, 1, 1, 1]
            assert views[new]["workflow_version"] == 2
            colors = posted_colors(stack.fakes[0].url)
            assert [colors[r] for r in old] == [0, 0, 0, 0] and colors[new] == 0x3779B1

            versions = session.get(f"{second}/v1/workflows/versions/versions", timeout=10).json()
            assert [v["version"] for v in versions["versions"]] == [1, 2] and versions["latest"] == 2
            old_again = submit(session, second, "versions", {"version": 1})  # an older version still runs
            assert session.get(f"{stack.api}/v1/runs/{old_again}?wait=30", timeout=40).json()["status"] == "succeeded"
            assert posted_colors(stack.fakes[0].url)[old_again] == 0

            assert session.delete(f"{second}/v1/workflows/versions", timeout=10).status_code == 204
            gone = session.post(f"{stack.api}/v1/workflows/versions/runs", json={}, timeout=10)
            assert gone.status_code == 410 and gone.headers["content-type"].startswith("application/problem+json")
        finally:
            other.stop()
