"""``comfy-dispatch workflows infer`` through typer's runner: the manifest printed, UI-format graphs converted
with a ComfyUI's node definitions (read from ``--comfyui-url``, answered here without a network), one-line errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dispatcher.cli import app
from dispatcher.cli import workflows as workflows_cli
from dispatcher.errors import ComfyUIUnavailable
from dispatcher.workflows.infer import infer_manifest

runner = CliRunner()
pytestmark = pytest.mark.timeout(10)
ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "workflows"
UI, API = FIXTURES / "default_graph.ui.json", FIXTURES / "default_graph.api.json"
DEFS: dict[str, Any] = json.loads((FIXTURES / "object_info.json").read_text())


@pytest.fixture
def comfyui(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ComfyUI URLs whose node definitions the command read (answered with the fixture's)."""
    asked: list[str] = []

    def definitions(url: str) -> dict[str, Any]:
        asked.append(url)
        return DEFS

    monkeypatch.setattr(workflows_cli, "node_definitions", definitions)
    return asked


def infer(*args: str) -> Any:
    return runner.invoke(app, ["workflows", "infer", *args])


def test_an_api_graph_prints_its_inferred_manifest(comfyui: list[str]) -> None:
    result = infer(str(API))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == infer_manifest(json.loads(API.read_text()))
    assert comfyui == []  # an API graph needs no ComfyUI


def test_a_workflow_folder_reads_its_graph() -> None:
    result = infer(str(ROOT / "workflows" / "sd15-inpaint"), "--summary")
    assert result.exit_code == 0, result.output
    assert "image\timage\trequired\t1::image" in result.stdout.splitlines()


def test_a_ui_graph_is_converted_with_the_comfyui_node_definitions(comfyui: list[str]) -> None:
    result = infer(str(UI), "--comfyui-url", "http://gpu1:8188")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == infer_manifest(json.loads(API.read_text()), DEFS)
    assert comfyui == ["http://gpu1:8188"]


def test_a_ui_graph_without_a_comfyui_gets_a_one_line_refusal() -> None:
    result = infer(str(UI))
    assert result.exit_code == 2 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"comfy-dispatch: {UI}: is a workflow in ComfyUI's UI format")
    assert "Export (API)" in line and "--comfyui-url" in line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.json"], "missing.json: file is missing"),
        (["--comfyui-url", "gpu1:8188", str(UI)], "--comfyui-url must be an http:// or https:// address"),
    ],
    ids=["missing file", "bad url"],
)
def test_bad_input_is_one_line(args: list[str], message: str) -> None:
    result = infer(*args)
    assert result.exit_code == 2 and message in result.stderr and len(result.stderr.splitlines()) == 1


def test_bad_json_and_a_graph_that_is_neither_format(tmp_path: Path) -> None:
    broken, odd = tmp_path / "broken.json", tmp_path / "odd.json"
    broken.write_text("{nope")
    odd.write_text(json.dumps({"1": {"inputs": {}}}))
    assert "invalid JSON" in infer(str(broken)).stderr
    result = infer(str(odd))
    assert result.exit_code == 2 and "node '1' has no class_type" in result.stderr


def test_a_comfyui_that_does_not_answer_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable(url: str) -> dict[str, Any]:
        raise ComfyUIUnavailable("GET /object_info: NewConnectionError: refused")

    monkeypatch.setattr(workflows_cli, "node_definitions", unreachable)
    result = infer(str(UI), "--comfyui-url", "http://127.0.0.1:1")
    assert result.exit_code == 2
    assert result.stderr == "comfy-dispatch: GET /object_info: NewConnectionError: refused\n"


def test_a_node_the_comfyui_lacks_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    lacking = {k: v for k, v in DEFS.items() if k != "KSampler"}
    monkeypatch.setattr(workflows_cli, "node_definitions", lambda url: lacking)
    result = infer(str(UI), "--comfyui-url", "http://gpu1:8188")
    assert result.exit_code == 2 and "node 3 is a 'KSampler', which the ComfyUI's node definitions do not have" in (
        result.stderr
    )


def test_node_definitions_are_read_from_the_comfyui(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real reader, against a client answered here: GET /object_info, the client closed after."""
    calls: list[str] = []

    class Client:
        def __init__(self, url: str, *, timeout: float) -> None:
            calls.append(f"new {url} {timeout}")

        def object_info(self) -> dict[str, Any]:
            calls.append("object_info")
            return {"KSampler": {}}

        def close(self) -> None:
            calls.append("close")

    monkeypatch.setattr("dispatcher.comfyui.client.ComfyClient", Client)
    assert workflows_cli.node_definitions("http://gpu1:8188") == {"KSampler": {}}
    assert calls == ["new http://gpu1:8188 60.0", "object_info", "close"]
