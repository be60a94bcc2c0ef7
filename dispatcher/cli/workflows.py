"""``comfy-dispatch workflows ...``: what the service makes of a ComfyUI graph (``infer``), and the published
workflows (``push``, ``list``, ``show``: :mod:`dispatcher.cli.publishing`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from dispatcher.cli import publishing
from dispatcher.cli.common import die
from dispatcher.errors import ComfyUIUnavailable, DispatchError
from dispatcher.workflows.bundled import GRAPH_FILE, read_json
from dispatcher.workflows.infer import infer_manifest, render_manifest, render_summary
from dispatcher.workflows.manifest import build_workflow, check_graph
from dispatcher.workflows.publish import to_api_graph

workflows_app = typer.Typer(
    no_args_is_help=True, help="Workflows: the parameters a graph is given; publishing them, reading them back."
)

ComfyUIUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--comfyui-url",
        help="a ComfyUI whose node definitions (/object_info) convert a UI-format graph and give the parameters' "
        "types, ranges and choices",
    ),
]
# /object_info of a ComfyUI with many custom nodes takes seconds to build.
OBJECT_INFO_TIMEOUT_SECONDS = 60.0


def node_definitions(comfyui_url: str) -> dict[str, Any]:
    """The node definitions (``GET /object_info``) of the ComfyUI at ``comfyui_url``; DispatchError if unreadable."""
    from dispatcher.comfyui.client import ComfyClient

    client = ComfyClient(comfyui_url, timeout=OBJECT_INFO_TIMEOUT_SECONDS)
    try:
        return client.object_info()
    except ValueError as exc:  # urllib3 cannot parse the address
        raise ComfyUIUnavailable(f"{comfyui_url}: {exc}") from None
    finally:
        client.close()


@workflows_app.command("infer")
def workflows_infer(
    graph_file: Annotated[
        Path, typer.Argument(metavar="GRAPH", help="a ComfyUI graph (.json, API or UI format) or a workflow folder")
    ],
    comfyui_url: ComfyUIUrlOpt = None,
    summary: Annotated[bool, typer.Option("--summary", help="one line per parameter instead of the JSON")] = False,
) -> None:
    """Print the manifest a graph without one is given (JSON), after converting a UI-format graph."""
    path = graph_file / GRAPH_FILE if graph_file.is_dir() else graph_file
    if comfyui_url is not None and not comfyui_url.startswith(("http://", "https://")):
        raise die(f"--comfyui-url must be an http:// or https:// address, not {comfyui_url!r}")
    try:
        graph = read_json(path)
        definitions = node_definitions(comfyui_url) if comfyui_url else None
        graph = to_api_graph(graph, definitions, where=str(path))
        manifest = infer_manifest(check_graph(graph, str(path)), definitions)
        # What inference gives must be what a publication accepts: built (validated) as one would be.
        build_workflow("inferred", graph, manifest, graph_where=str(path), manifest_where="inferred manifest")
    except DispatchError as exc:
        raise die(str(exc)) from None
    typer.echo(render_summary(manifest) if summary else render_manifest(manifest), nl=False)


workflows_app.command("push")(publishing.push_command)
workflows_app.command("list")(publishing.list_command)
workflows_app.command("show")(publishing.show_command)
