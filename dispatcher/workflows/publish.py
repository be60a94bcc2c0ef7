"""What a publication (``PUT /v1/workflows/{id}``, ``comfy-dispatch workflows push``) carries, made a Workflow.

A body is ``{"graph": {...}, "manifest": {...}}`` (the manifest optional, then inferred) or a bare graph. A graph
saved from ComfyUI's editor (UI format) is converted to the API format with a ComfyUI's node definitions
(``/object_info``), asked for only when needed: the API reads the ones its workers published.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dispatcher.errors import ManifestError
from dispatcher.workflows import uiformat
from dispatcher.workflows.manifest import Workflow, build_workflow, parse_json

PUBLICATION_KEYS = frozenset({"graph", "manifest"})


def split_publication(body: Any) -> tuple[Any, Any]:
    """The (graph, manifest or None) of a publication body; ManifestError for a body of neither form."""
    if isinstance(body, dict) and "graph" in body:
        unknown = sorted(set(body) - PUBLICATION_KEYS)
        if unknown:
            raise ManifestError(
                "body", f"unknown field(s) {', '.join(unknown)}; a publication takes graph and manifest"
            )
        return body["graph"], body.get("manifest")
    if isinstance(body, dict) and "manifest" in body:
        raise ManifestError("body", 'a manifest needs its graph: {"graph": {...}, "manifest": {...}}')
    return body, None


def to_api_graph(graph: Any, definitions: dict[str, Any] | None, *, where: str = "graph") -> Any:
    """``graph`` in the API format: converted when it is a UI-format one (``where`` names it in errors)."""
    if uiformat.is_ui_format(graph):
        return uiformat.to_api_format(graph, definitions, where=where)
    return graph


def unwrap_publication(workflow_id: str, raw: bytes | str, node_definitions: Callable[[], dict[str, Any]]) -> Workflow:
    """The Workflow a publication body (raw JSON) describes, validated; ManifestError naming what is wrong.

    ``node_definitions`` (read only when needed) convert a UI-format graph and give an inferred manifest the
    choices and ranges of the workers' ComfyUIs."""
    graph, manifest = split_publication(parse_json(raw, "body"))
    definitions = node_definitions() or None if manifest is None or uiformat.is_ui_format(graph) else None
    graph = to_api_graph(graph, definitions)
    return build_workflow(
        workflow_id, graph, manifest, graph_where="graph", manifest_where="manifest", node_definitions=definitions
    )
