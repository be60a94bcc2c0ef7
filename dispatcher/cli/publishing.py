"""``comfy-dispatch workflows push | list | show``: publish workflows to the API and read them back.

``push`` takes a workflow folder (``workflow.json`` and, optionally, ``manifest.json``, as in ``workflows/``) or a
graph file; the id is the folder's name or the file's stem unless ``--id``. A graph saved from ComfyUI's editor
(UI format) is converted here with ``--comfyui-url``'s node definitions, else by the API with its workers'.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from dispatcher.cli.common import die
from dispatcher.cli.run import ApiKeyOpt, ApiUrlOpt
from dispatcher.errors import DispatchError

if TYPE_CHECKING:
    from comfy_dispatch_client import Workflow

JsonOpt = Annotated[bool, typer.Option("--json", help="print what the API answered, as JSON")]


def read_publication(path: Path) -> tuple[str, Any, Any]:
    """(default id, graph, manifest or None) of a workflow folder or a graph file; ManifestError naming the file."""
    from dispatcher.workflows.bundled import GRAPH_FILE, MANIFEST_FILE, read_json  # noqa: PLC0415
    from dispatcher.workflows.publish import split_publication  # noqa: PLC0415

    if path.is_dir():
        manifest_path = path / MANIFEST_FILE
        manifest = read_json(manifest_path) if manifest_path.exists() else None
        return path.name, read_json(path / GRAPH_FILE), manifest
    graph, manifest = split_publication(read_json(path))
    return path.stem, graph, manifest


def push_command(
    path: Annotated[Path, typer.Argument(help="a workflow folder (workflow.json, manifest.json) or a graph file")],
    workflow_id: Annotated[
        str | None, typer.Option("--id", help="the workflow id; default: the folder or file name")
    ] = None,
    comfyui_url: Annotated[
        str | None,
        typer.Option("--comfyui-url", help="convert a UI-format graph with this ComfyUI's node definitions"),
    ] = None,
    json_output: JsonOpt = False,
    api_url: ApiUrlOpt = None,
    api_key: ApiKeyOpt = None,
) -> None:
    """Publish a workflow as its new latest version (an admin key); runs use it from now on."""
    if not path.exists():
        raise die(f"{path}: no such file or folder")
    try:
        default_id, graph, manifest = read_publication(path)
        if comfyui_url is not None:
            graph = _converted(graph, comfyui_url)
    except DispatchError as exc:
        raise die(str(exc)) from None
    from dispatcher.cli.remote import api_errors, connect  # noqa: PLC0415

    workflow_id = workflow_id or default_id
    with connect(api_url, api_key) as client, api_errors(f"push of {workflow_id}"):
        before = _latest(client, workflow_id)
        workflow = client.publish_workflow(workflow_id, graph, manifest)
    if json_output:
        typer.echo(json.dumps(workflow.raw, indent=2))
        return
    what = "unchanged" if before == workflow.version else "published"
    inferred = ", parameters inferred" if workflow.inferred else ""
    typer.echo(f"{what}: {workflow.id} version {workflow.version} ({len(workflow.params)} parameters{inferred})")


def list_command(json_output: JsonOpt = False, api_url: ApiUrlOpt = None, api_key: ApiKeyOpt = None) -> None:
    """List the workflows that take runs, at their latest version."""
    from dispatcher.cli.remote import api_errors, connect  # noqa: PLC0415

    with connect(api_url, api_key) as client, api_errors("workflows list"):
        workflows = client.list_workflows()
    if json_output:
        typer.echo(json.dumps([w.raw for w in workflows], indent=2))
        return
    for w in workflows:
        inferred = " (inferred)" if w.inferred else ""
        typer.echo(f"{w.id}\tv{w.version}\t{', '.join(w.params) or '-'}{inferred}\t{w.description}")


def show_command(
    workflow_id: Annotated[str, typer.Argument(help="the workflow id")],
    version: Annotated[int | None, typer.Option("--version", min=1, help="a version; default: the latest")] = None,
    versions: Annotated[bool, typer.Option("--versions", help="list every version instead")] = False,
    json_output: JsonOpt = False,
    api_url: ApiUrlOpt = None,
    api_key: ApiKeyOpt = None,
) -> None:
    """Show a workflow's parameters and manifest (with --json, its graph too), or with --versions its versions."""
    from dispatcher.cli.remote import api_errors, connect  # noqa: PLC0415

    with connect(api_url, api_key) as client, api_errors(f"workflow {workflow_id}"):
        if versions:
            found = client.workflow_versions(workflow_id)
            if json_output:
                typer.echo(json.dumps([_version_json(v) for v in found], indent=2))
            for v in [] if json_output else found:
                when = v.created_at.isoformat() if v.created_at else "-"
                typer.echo(f"v{v.version}\t{when}\t{v.source}\t{'inferred' if v.inferred else 'manifest'}\t{v.digest}")
            return
        workflow = client.get_workflow(workflow_id, version)
    if json_output:
        typer.echo(json.dumps(workflow.raw, indent=2))
        return
    typer.echo(_describe(workflow))


def _describe(workflow: Workflow) -> str:
    lines = [
        f"{workflow.id} version {workflow.version}" + (f": {workflow.description}" if workflow.description else "")
    ]
    if workflow.inferred:
        lines.append("parameters inferred from the graph (publish a manifest to name them yourself)")
    for name, spec in workflow.params.items():
        extras = [f"{k}={spec[k]!r}" for k in ("default", "min", "max") if k in spec]
        if "choices" in spec:
            extras.append(f"{len(spec['choices'])} choices")
        required = "required" if spec.get("required") else "optional"
        lines.append(f"  {name}\t{spec.get('type')}\t{required}\t{' '.join(extras)}")
    return "\n".join(lines)


def _version_json(v: Any) -> dict[str, Any]:
    return {
        "version": v.version,
        "created_at": v.created_at.isoformat() if v.created_at else None,
        "source": v.source,
        "digest": v.digest,
        "inferred": v.inferred,
        "published_by": v.published_by,
    }


def _latest(client: Any, workflow_id: str) -> int | None:
    from comfy_dispatch_client import NotFound  # noqa: PLC0415

    try:
        return int(client.get_workflow(workflow_id).version)
    except NotFound:
        return None


def _converted(graph: Any, comfyui_url: str) -> Any:
    """``graph`` in the API format, a UI-format one converted with the node definitions of ``comfyui_url``."""
    from dispatcher.cli.workflows import node_definitions  # noqa: PLC0415
    from dispatcher.workflows import uiformat  # noqa: PLC0415
    from dispatcher.workflows.publish import to_api_graph  # noqa: PLC0415

    return to_api_graph(graph, node_definitions(comfyui_url) if uiformat.is_ui_format(graph) else None)
