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
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from dispatcher.errors import UIFormatError
from dispatcher.workflows.widgets import (
    DynamicPromptTooDeep,
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


LinkId = int | str
"""A link's id: a number as the editor saves it (a string is taken too)."""
MAX_INDEX = 2**32 - 2
"""The largest array index of JavaScript, whose objects list such keys first."""
_ARRAY_INDEX = re.compile(r"0|[1-9][0-9]{0,9}")  # [0-9], not \d: that takes other scripts' digits


@dataclass(frozen=True)
class _Input:
    name: str
    type: Any  # a string (a number or None too, as litegraph's wildcards): hashable
    link: LinkId | None
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


def node_order(node_id: str) -> tuple[int, int, str]:
    """Integer ids first, ascending, then any others: how JavaScript orders the keys of the exported object.

    Integers are what JavaScript takes for array indices: ASCII digits without a leading zero, up to 2**32 - 2
    (``str.isdigit`` takes ``"²"``, which ``int`` refuses, and ``int`` refuses thousands of digits)."""
    if _ARRAY_INDEX.fullmatch(node_id) and int(node_id) <= MAX_INDEX:
        return 0, int(node_id), ""
    return 1, 0, node_id


def _valid_connection(a: Any, b: Any) -> bool:
    """litegraph's ``isValidConnection``: equal, a wildcard, or overlapping comma-separated unions."""
    if a in ("", "*", None, 0) or b in ("", "*", None, 0) or a == b:
        return True
    first, second = str(a).lower().split(","), str(b).lower().split(",")
    # litegraph compares every part with every other; a set does the same in linear time (types are user data).
    return any(part in ("", "*") for part in (*first, *second)) or not set(first).isdisjoint(second)


def _shown(value: Any) -> str:
    """``value`` for an error message: a scalar as it is (cut short), a list or an object by its kind only."""
    text = "a list" if isinstance(value, list) else "an object" if isinstance(value, Mapping) else repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


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
        # Where each (node, output slot, wanted type) leads: a long chain of reroutes is followed once, not once
        # per input it feeds; and so is each link's primitive value.
        self.resolved: dict[tuple[str, int, Any], tuple[str, int] | None] = {}
        self.primitives: dict[LinkId, tuple[bool, Any]] = {}

    def fail(self, detail: str) -> NoReturn:
        raise UIFormatError(self.where, detail)

    def _refuse_unsupported(self, graph: Mapping[str, Any]) -> None:
        definitions = graph.get("definitions")
        if isinstance(definitions, Mapping) and definitions.get("subgraphs"):
            self.fail(f"uses subgraphs, which this conversion does not expand: {EXPORT_HINT}")
        extra = graph.get("extra")
        if isinstance(extra, Mapping) and extra.get("groupNodes"):
            self.fail(f"uses group nodes, which this conversion does not expand: {EXPORT_HINT}")

    # --- reading the graph, its shape checked: every later step may rely on it ------------------------------

    def _links(self, raw: Any) -> dict[LinkId, tuple[str, int]]:
        """link id -> (origin node id, origin slot), from ``[id, origin, slot, target, slot, type]`` rows or
        the newer ``{"id", "origin_id", "origin_slot", ...}`` objects."""
        if raw is not None and not isinstance(raw, list):
            self.fail(f"links must be a list, not {_shown(raw)}")
        links: dict[LinkId, tuple[str, int]] = {}
        for row in raw or []:
            if isinstance(row, list) and len(row) >= 3:
                link_id, origin, slot = row[0], row[1], row[2]
            elif isinstance(row, Mapping):
                link_id, origin, slot = row.get("id"), row.get("origin_id"), row.get("origin_slot")
            else:
                self.fail("a link must be [id, origin_id, origin_slot, target_id, target_slot, type], "
                          f"not {_shown(row)}")  # fmt: skip
            if not _is_id(link_id):
                self.fail(f"a link's id must be a number or a string, not {_shown(link_id)}")
            if origin is None or slot is None:
                self.fail(f"link {_shown(link_id)} has no origin node and slot")
            links[link_id] = self._id(origin, f"link {_shown(link_id)}: its origin node id"), self._slot(slot, link_id)
        return links

    def _id(self, value: Any, what: str) -> str:
        if not _is_id(value):
            self.fail(f"{what} must be a number or a string, not {_shown(value)}")
        return str(value)

    def _slot(self, value: Any, link_id: LinkId) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            self.fail(f"link {_shown(link_id)}: its origin slot must be a whole number from 0, not {_shown(value)}")
        return value

    def _list(self, raw: Mapping[str, Any], key: str, node_id: str) -> list[Mapping[str, Any]]:
        entries = raw.get(key)
        if entries is None:
            return []
        if not isinstance(entries, list) or not all(isinstance(entry, Mapping) for entry in entries):
            self.fail(f"node {node_id}: {key} must be a list of objects, not {_shown(entries)}")
        return entries

    def _type(self, entry: Mapping[str, Any], default: Any, what: str) -> Any:
        kind = entry.get("type", default)
        if not _is_type(kind):
            self.fail(f"{what}: its type must be a string, not {_shown(kind)}")
        return kind

    def _node(self, raw: Any) -> _Node:
        if not isinstance(raw, Mapping) or raw.get("id") is None or not isinstance(raw.get("type"), str):
            self.fail("every node needs an id and a type")
        node_id, class_type = self._id(raw["id"], "a node's id"), raw["type"]
        if class_type.startswith(("workflow>", "workflow/")):
            self.fail(f"node {node_id} is a group node ({class_type}), which this conversion does not expand: "
                      f"{EXPORT_HINT}")  # fmt: skip
        by_name: dict[str, Mapping[str, Any]] = {}
        for entry in self._list(raw, "inputs", node_id):
            name = entry.get("name")
            if not isinstance(name, str):
                self.fail(f"node {node_id}: an input's name must be a string, not {_shown(name)}")
            by_name[name] = entry
        inputs: list[_Input] = []
        definition = self.definitions.get(class_type)
        # Since frontend 1.16 a node's inputs follow its definition, a socket per widget included; a saved
        # workflow keeps only the connected ones (compressWidgetInputSlots).
        for name, spec in ordered_inputs(definition) if isinstance(definition, Mapping) else []:
            kind, _ = spec_parts(spec)
            inputs.append(self._input(node_id, name, by_name.pop(name, None), _defined_type(kind)))
        inputs += [self._input(node_id, name, entry, None) for name, entry in by_name.items()]
        outputs = [self._type(e, None, f"node {node_id} output") for e in self._list(raw, "outputs", node_id)]
        if not outputs and isinstance(definition, Mapping) and isinstance(definition.get("output"), list):
            outputs = [_defined_type(kind) for kind in definition["output"]]
        return _Node(node_id, class_type, raw.get("mode", 0), tuple(inputs), tuple(outputs), raw)

    def _input(self, node_id: str, name: str, entry: Mapping[str, Any] | None, default_type: Any) -> _Input:
        if entry is None:
            return _Input(name, default_type, None, None)
        what = f"node {node_id} input {name!r}"
        link = entry.get("link")
        if link is not None and not _is_id(link):
            self.fail(f"{what}: its link must be a link id (a number), not {_shown(link)}")
        widget = entry.get("widget")
        widget_name = widget.get("name") if isinstance(widget, Mapping) else None
        if widget_name is not None and not isinstance(widget_name, str):
            self.fail(f"{what}: its widget's name must be a string, not {_shown(widget_name)}")
        return _Input(name, self._type(entry, default_type, what), link, widget_name)

    # --- resolving links (litegraph's ExecutableNodeDTO.resolveInput / resolveOutput) ---------------------

    def resolve_input(self, node: _Node, slot: int) -> tuple[str, int] | None:
        """Where input ``slot`` of ``node`` comes from: (node id, output slot), or None when nothing is.

        litegraph recurses between an input and the output feeding it; a loop here, so that hundreds of
        reroutes or bypassed nodes in a row exhaust no stack. Every step is remembered: a link seen twice is a
        circle (refused), and the answer of each output is kept for the next input that reaches it."""
        seen: set[tuple[str, str, int]] = set()
        outputs: list[tuple[str, int, Any]] = []  # the outputs passed through, which all lead to the answer
        wanted: Any = None
        found: tuple[str, int] | None = None
        while True:
            self._visit(seen, (node.id, "I", slot))
            if slot >= len(node.inputs) or node.inputs[slot].link is None:
                break
            entry = node.inputs[slot]
            link = self.links.get(entry.link) if entry.link is not None else None
            if link is None:
                self.fail(f"node {node.id} input {entry.name!r} names link {entry.link!r}, which is not in the links")
            origin = self.nodes.get(link[0])
            if origin is None:
                self.fail(f"node {node.id} input {entry.name!r} is linked from node {link[0]}, which does not exist")
            node, slot, wanted = origin, link[1], wanted if wanted is not None else entry.type
            key = (node.id, slot, wanted)
            if key in self.resolved:
                found = self.resolved[key]
                break
            outputs.append(key)
            self._visit(seen, (node.id, "O", slot))
            if node.mode == MODE_BYPASS:
                slot, wanted = self._bypass_slot(node, slot, wanted), None
                if slot < 0:
                    break
            elif node.type not in VIRTUAL_TYPES:
                found = node.id, slot
                break
            elif slot >= len(node.inputs):  # a reroute passes its input on; a primitive's value went to the widget
                break
        for key in outputs:
            self.resolved[key] = found
        return found

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
        passed: dict[LinkId, None] = {}  # the links followed (in a dict: looked up at each step), all leading here
        found: tuple[bool, Any] = (False, None)
        while entry is not None and entry.link is not None and entry.link in self.links:
            if entry.link in self.primitives:
                found = self.primitives[entry.link]
                break
            if entry.link in passed:  # a circle of reroutes: resolve_input names it
                break
            passed[entry.link] = None
            origin = self.nodes.get(self.links[entry.link][0])
            if origin is None:
                break
            if origin.type == "PrimitiveNode":
                values = origin.raw.get("widgets_values")
                found = (True, values[0]) if isinstance(values, list) and values else (False, None)
                break
            if origin.type != "Reroute" or not origin.inputs:
                break
            entry = origin.inputs[0]
        for link in passed:
            self.primitives[link] = found
        return found

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
                try:
                    processed = process_dynamic_prompt(value, self.random.random)
                except DynamicPromptTooDeep as exc:
                    self.fail(f"node {node.id} ({node.type}) {widget.name}: {exc}: {EXPORT_HINT}")
                if "{" in value and processed != value:
                    log.warning("node %s %s: {a|b} choices are picked once, at conversion", node.id, widget.name)
                value = processed
            # A list would read as a link: the editor wraps it, and ComfyUI unwraps it.
            inputs[widget.name] = {"__value__": value} if isinstance(value, list) else value
        for slot, entry in enumerate(node.inputs):
            origin = self.resolve_input(node, slot)
            if origin is not None:
                inputs[entry.name] = [origin[0], origin[1]]
        title = node.raw.get("title")
        if not isinstance(title, str):
            title = definition.get("display_name") or node.type
        return {"inputs": inputs, "class_type": node.type, "_meta": {"title": title}}

    def convert(self) -> dict[str, Any]:
        output: dict[str, Any] = {}
        for node in sorted(self.nodes.values(), key=lambda n: node_order(n.id)):
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


def _is_id(value: Any) -> bool:
    """Whether ``value`` may be a node or link id: a number (not a boolean) or a string."""
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def _is_type(value: Any) -> bool:
    """Whether ``value`` may be a socket's type: a string, or a number or null (litegraph's wildcards)."""
    return value is None or isinstance(value, str | int | float)


def _defined_type(kind: Any) -> Any:
    """The socket type of a definition's input or output spec: its name, COMBO for a list of choices."""
    return "COMBO" if isinstance(kind, list) else kind if isinstance(kind, str) else None
