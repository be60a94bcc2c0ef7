"""UI-format graphs (as ComfyUI's editor saves them) converted to the API format, as the editor does. Pure, no I/O.

A UI-format workflow (``{"nodes": [...], "links": [...], "groups": [...], ...}``) keeps each node's widget values
in a list (``widgets_values``) whose slots only the node's definition explains, so converting needs a ComfyUI's
node definitions (``/object_info``). :func:`to_api_format` follows the editor's ``graphToPrompt``
(ComfyUI_frontend ``src/utils/executionUtil.ts`` and litegraph's ``ExecutableNodeDTO``):

* each node's widgets become inputs (:mod:`dispatcher.workflows.widgets` says which slot is which), a prompt
  widget's ``{a|b}`` choices and comments processed as the editor's ``Comfy.DynamicPrompts`` does;
* each connected input becomes ``[origin_id, origin_slot]``, overriding the widget of the same name (an input
  converted to a socket); a widget fed by a ``PrimitiveNode`` (frontend-only) takes the primitive's value;
* ``Reroute`` nodes are followed through; a bypassed node (mode 4) passes on, for each output, its input of
  the same slot or else the first of a matching type; a muted node (mode 2) is left out, and so are inputs
  fed by it; notes and groups are dropped;
* ``_meta.title`` is the node's title, or its class's display name.

Nodes come out in ascending id order, as the editor's export shows them (JavaScript orders integer keys so).
Subgraphs and legacy group nodes are refused: the editor's own "Export (API)" expands them.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from dispatcher.errors import UIFormatError
from dispatcher.workflows.widgets import (
    UnsupportedWidget,
    ordered_inputs,
    process_dynamic_prompt,
    spec_parts,
    widget_values,
)

log = logging.getLogger(__name__)

VIRTUAL_TYPES = frozenset({"PrimitiveNode", "Reroute", "Note", "MarkdownNote"})
"""The editor's own nodes: never sent to ComfyUI."""
MODE_NEVER, MODE_BYPASS = 2, 4
EXPORT_HINT = (
    "export the API format from ComfyUI instead (Workflow menu > Export (API); in older versions enable "
    '"Dev mode options" in the settings, then "Save (API Format)")'
)
NO_DEFINITIONS = (
    "is a workflow in ComfyUI's UI format, which takes a ComfyUI's node definitions to convert: "
    f"{EXPORT_HINT}, or give the address of a ComfyUI to read them from (--comfyui-url)"
)


def is_ui_format(graph: Any) -> bool:
    """Whether ``graph`` is a workflow as ComfyUI's editor saves it (``{"nodes": [...], "links": [...]}``)."""
    return isinstance(graph, dict) and isinstance(graph.get("nodes"), list) and "links" in graph


@dataclass(frozen=True)
class _Input:
    name: str
    type: Any
    link: Any  # the link id, or None
    widget: str | None  # the widget this socket stands for, if any


@dataclass(frozen=True)
class _Node:
    id: str
    type: str
    mode: Any
    inputs: tuple[_Input, ...]  # in the editor's order: the definition's, then any others
    output_types: tuple[Any, ...]
    raw: Mapping[str, Any]


def to_api_format(
    graph: dict[str, Any], node_definitions: dict[str, Any] | None, *, where: str = "graph"
) -> dict[str, Any]:
    """``graph`` converted to the API format with ``node_definitions`` (a ComfyUI's ``/object_info``).

    Raises :class:`UIFormatError` (``where`` names the graph) without node definitions, for a node class they
    lack, for subgraphs and group nodes, and for a graph whose shape is broken.
    """
    if not node_definitions:
        raise UIFormatError(where, NO_DEFINITIONS)
    return _Converter(graph, node_definitions, where).convert()


def _id_order(node_id: str) -> tuple[int, int, str]:
    """Integer ids first, ascending, then any others: how JavaScript orders the keys of the exported object."""
    return (0, int(node_id), "") if node_id.isdigit() else (1, 0, node_id)


def _valid_connection(a: Any, b: Any) -> bool:
    """litegraph's ``isValidConnection``: equal, a wildcard, or overlapping comma-separated unions."""
    if a in ("", "*", None, 0) or b in ("", "*", None, 0) or a == b:
        return True
    first, second = str(a).lower(), str(b).lower()
    if "," not in first and "," not in second:
        return first == second
    return any(_valid_connection(x, y) for x in first.split(",") for y in second.split(","))


class _Converter:
    def __init__(self, graph: Mapping[str, Any], definitions: Mapping[str, Any], where: str) -> None:
        self.where = where
        self.definitions = definitions
        self._refuse_unsupported(graph)
        self.links = self._links(graph.get("links"))
        self.nodes: dict[str, _Node] = {}
        for raw in graph["nodes"]:
            node = self._node(raw)
            if node.id in self.nodes:
                self.fail(f"node id {node.id} appears twice")
            self.nodes[node.id] = node
        self.random = random.Random(0)  # {a|b} choices: the same file converts to the same graph

    def fail(self, detail: str) -> NoReturn:
        raise UIFormatError(self.where, detail)

    def _refuse_unsupported(self, graph: Mapping[str, Any]) -> None:
        definitions = graph.get("definitions")
        if isinstance(definitions, Mapping) and definitions.get("subgraphs"):
            self.fail(f"uses subgraphs, which this conversion does not expand: {EXPORT_HINT}")
        extra = graph.get("extra")
        if isinstance(extra, Mapping) and extra.get("groupNodes"):
            self.fail(f"uses group nodes, which this conversion does not expand: {EXPORT_HINT}")

    def _links(self, raw: Any) -> dict[Any, tuple[str, int]]:
        """link id -> (origin node id, origin slot), from ``[id, origin, slot, target, slot, type]`` rows or
        the newer ``{"id", "origin_id", "origin_slot", ...}`` objects."""
        links: dict[Any, tuple[str, int]] = {}
        for row in raw if isinstance(raw, list) else []:
            if isinstance(row, list) and len(row) >= 3:
                link_id, origin, slot = row[0], row[1], row[2]
            elif isinstance(row, Mapping):
                link_id, origin, slot = row.get("id"), row.get("origin_id"), row.get("origin_slot")
            else:
                self.fail(f"a link must be [id, origin_id, origin_slot, target_id, target_slot, type], not {row!r}")
            if isinstance(slot, bool) or not isinstance(slot, int) or origin is None:
                self.fail(f"link {link_id!r} has no origin node and slot")
            links[link_id] = (str(origin), slot)
        return links

    def _node(self, raw: Any) -> _Node:
        if not isinstance(raw, Mapping) or raw.get("id") is None or not isinstance(raw.get("type"), str):
            self.fail("every node needs an id and a type")
        node_id, class_type = str(raw["id"]), raw["type"]
        if class_type.startswith(("workflow>", "workflow/")):
            self.fail(f"node {node_id} is a group node ({class_type}), which this conversion does not expand: "
                      f"{EXPORT_HINT}")  # fmt: skip
        saved = [entry for entry in raw.get("inputs") or [] if isinstance(entry, Mapping)]
        by_name = {entry.get("name"): entry for entry in saved}
        inputs: list[_Input] = []
        definition = self.definitions.get(class_type)
        # Since frontend 1.16 a node's inputs follow its definition, a socket per widget included; a saved
        # workflow keeps only the connected ones (compressWidgetInputSlots).
        for name, spec in ordered_inputs(definition) if isinstance(definition, Mapping) else []:
            kind, _ = spec_parts(spec)
            entry = by_name.pop(name, None)
            default_type = "COMBO" if isinstance(kind, list) else kind
            inputs.append(self._input(name, entry, default_type))
        inputs += [self._input(str(entry.get("name")), entry, None) for entry in by_name.values()]
        outputs = [entry.get("type") for entry in raw.get("outputs") or [] if isinstance(entry, Mapping)]
        if not outputs and isinstance(definition, Mapping):
            outputs = ["COMBO" if isinstance(t, list) else t for t in definition.get("output") or []]
        return _Node(node_id, class_type, raw.get("mode", 0), tuple(inputs), tuple(outputs), raw)

    @staticmethod
    def _input(name: str, entry: Mapping[str, Any] | None, default_type: Any) -> _Input:
        if entry is None:
            return _Input(name, default_type, None, None)
        widget = entry.get("widget")
        widget_name = widget.get("name") if isinstance(widget, Mapping) else None
        return _Input(name, entry.get("type", default_type), entry.get("link"), widget_name)

    # --- resolving links (litegraph's ExecutableNodeDTO.resolveInput / resolveOutput) ---------------------

    def resolve_input(
        self, node: _Node, slot: int, wanted: Any, seen: set[tuple[str, str, int]]
    ) -> tuple[str, int] | None:
        """Where input ``slot`` of ``node`` comes from: (node id, output slot), or None when nothing is."""
        self._visit(seen, (node.id, "I", slot))
        if slot >= len(node.inputs) or node.inputs[slot].link is None:
            return None
        entry = node.inputs[slot]
        link = self.links.get(entry.link)
        if link is None:
            self.fail(f"node {node.id} input {entry.name!r} names link {entry.link!r}, which is not in the links")
        origin = self.nodes.get(link[0])
        if origin is None:
            self.fail(f"node {node.id} input {entry.name!r} is linked from node {link[0]}, which does not exist")
        return self.resolve_output(origin, link[1], wanted if wanted is not None else entry.type, seen)

    def resolve_output(
        self, node: _Node, slot: int, wanted: Any, seen: set[tuple[str, str, int]]
    ) -> tuple[str, int] | None:
        self._visit(seen, (node.id, "O", slot))
        if node.mode == MODE_BYPASS:
            index = self._bypass_slot(node, slot, wanted)
            return None if index < 0 else self.resolve_input(node, index, None, seen)
        if node.type in VIRTUAL_TYPES:  # a reroute passes its input on; a primitive's value went to the widget
            return self.resolve_input(node, slot, wanted, seen) if slot < len(node.inputs) else None
        return node.id, slot

    def _visit(self, seen: set[tuple[str, str, int]], key: tuple[str, str, int]) -> None:
        if key in seen:
            self.fail(f"links go round in a circle through node {key[0]}")
        seen.add(key)

    @staticmethod
    def _bypass_slot(node: _Node, slot: int, wanted: Any) -> int:
        """The input a bypassed node passes on for output ``slot``: the same slot if its type fits, else the first
        input of exactly the wanted type, else the first that fits; -1 for none."""
        inputs = node.inputs
        if wanted in ("*", "", None):
            return slot if len(inputs) > slot else (0 if inputs else -1)
        output_type = node.output_types[slot] if slot < len(node.output_types) else None
        if slot < len(inputs):
            opposite = inputs[slot].type
            if _valid_connection(opposite, output_type) and _valid_connection(opposite, wanted):
                return slot
        for index, entry in enumerate(inputs):
            if entry.type == wanted:
                return index
        for index, entry in enumerate(inputs):
            if _valid_connection(entry.type, output_type) and _valid_connection(entry.type, wanted):
                return index
        return -1

    # --- emitting nodes -------------------------------------------------------------------------------------

    def primitive_value(self, node: _Node, widget: str) -> tuple[bool, Any]:
        """(True, value) when the widget's socket is fed by a PrimitiveNode (through reroutes), whose value the
        editor writes into the widget before it serialises (``applyToGraph``)."""
        entry = next((e for e in node.inputs if (e.widget or e.name) == widget and e.link is not None), None)
        seen: set[Any] = set()
        while entry is not None and entry.link in self.links and entry.link not in seen:
            seen.add(entry.link)
            origin = self.nodes.get(self.links[entry.link][0])
            if origin is None:
                return False, None
            if origin.type == "PrimitiveNode":
                values = origin.raw.get("widgets_values")
                return (True, values[0]) if isinstance(values, list) and values else (False, None)
            if origin.type != "Reroute" or not origin.inputs:
                return False, None
            entry = origin.inputs[0]
        return False, None

    def emit(self, node: _Node) -> dict[str, Any]:
        definition = self.definitions.get(node.type)
        if not isinstance(definition, Mapping):
            self.fail(f"node {node.id} is a {node.type!r}, which the ComfyUI's node definitions do not have "
                      "(a custom node not installed there?)")  # fmt: skip
        try:
            pairs, problem = widget_values(node.type, definition, node.raw.get("widgets_values"))
        except UnsupportedWidget as exc:
            self.fail(f"node {node.id} ({node.type}): {exc}: {EXPORT_HINT}")
        if problem:
            self.fail(f"node {node.id} ({node.type}) {problem}: {EXPORT_HINT}")
        inputs: dict[str, Any] = {}
        for widget, saved in pairs:
            assert widget.name is not None  # widget_values sends named widgets only
            fed, value = self.primitive_value(node, widget.name)
            value = value if fed else saved
            if widget.dynamic_prompts and isinstance(value, str):
                processed = process_dynamic_prompt(value, self.random.random)
                if "{" in value and processed != value:
                    log.warning("node %s %s: {a|b} choices are picked once, at conversion", node.id, widget.name)
                value = processed
            # A list would read as a link: the editor wraps it, and ComfyUI unwraps it.
            inputs[widget.name] = {"__value__": value} if isinstance(value, list) else value
        for slot, entry in enumerate(node.inputs):
            origin = self.resolve_input(node, slot, None, set())
            if origin is not None:
                inputs[entry.name] = [origin[0], origin[1]]
        title = node.raw.get("title")
        if not isinstance(title, str):
            title = definition.get("display_name") or node.type
        return {"inputs": inputs, "class_type": node.type, "_meta": {"title": title}}

    def convert(self) -> dict[str, Any]:
        output: dict[str, Any] = {}
        for node in sorted(self.nodes.values(), key=lambda n: _id_order(n.id)):
            if node.type in VIRTUAL_TYPES or node.mode in (MODE_NEVER, MODE_BYPASS):
                continue
            output[node.id] = self.emit(node)
        # Inputs fed by a node left out (muted) are left out too, as the editor does.
        for api_node in output.values():
            for name, value in list(api_node["inputs"].items()):
                if isinstance(value, list) and len(value) == 2 and value[0] not in output:
                    del api_node["inputs"][name]
        if not output:
            self.fail("has no node to run (every node is muted, bypassed or the editor's own)")
        return output
