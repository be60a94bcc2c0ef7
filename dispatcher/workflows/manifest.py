"""A workflow: a ComfyUI API-format graph and the manifest that names its parameters, validated together.

The manifest says which inputs of the graph a run may set, and how. A graph without one gets one inferred
(:mod:`dispatcher.workflows.infer`). Everything is checked when a workflow is built, so a broken manifest is
refused when it is published (or stops the service at start-up for a bundled one) instead of failing runs later.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from dispatcher.errors import ManifestError, ParameterError, UIFormatError
from dispatcher.inputs import canonical_image
from dispatcher.workflows.uiformat import EXPORT_HINT, is_ui_format

logger = logging.getLogger(__name__)

PARAM_TYPES = frozenset({"int", "float", "string", "bool", "enum", "image"})
NUMERIC_TYPES = frozenset({"int", "float"})
MANIFEST_KEYS = frozenset({"description", "max_attempts", "timeout_seconds", "cache", "params"})
PARAM_KEYS = frozenset(
    {"node", "input", "targets", "type", "default", "required", "min", "max", "choices", "description"}
)
# Workflow ids appear in URLs and Redis keys, so they stay url-safe.
WORKFLOW_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


Fail = Callable[[str], NoReturn]


def is_link(value: Any) -> bool:
    """Tell whether a graph input value is a link ``[node_id, output_index]`` (ComfyUI treats any list so)."""
    return isinstance(value, list)


@dataclass(frozen=True)
class Param:
    """One named parameter of a workflow and the graph inputs it is written to."""

    name: str
    type: str
    targets: tuple[tuple[str, str], ...]
    default: Any = None
    required: bool = True
    min: int | float | None = None
    max: int | float | None = None
    choices: tuple[Any, ...] | None = None
    description: str | None = None

    def check(self, value: Any) -> Any:
        """Return ``value`` in its canonical form, or raise ``ParameterError(name, detail)`` if it does not fit."""
        # Canonical forms (7.0 -> 7 for int, 7 -> 7.0 for float) keep graph digests stable across clients.
        if self.type == "int":
            fractional = isinstance(value, float) and not value.is_integer()
            if isinstance(value, bool) or not isinstance(value, int | float) or fractional:
                raise ParameterError(self.name, "must be an integer")
            value = int(value)
        elif self.type == "float":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ParameterError(self.name, "must be a number")
            try:
                value = float(value)
            except OverflowError:  # a JSON integer may have hundreds of digits; a float stops near 1.8e308
                raise ParameterError(self.name, "must be a finite number; this one is too large for a float") from None
            if not math.isfinite(value):
                raise ParameterError(self.name, "must be a finite number")
        elif self.type == "string":
            if not isinstance(value, str):
                raise ParameterError(self.name, "must be a string")
        elif self.type == "bool":
            if not isinstance(value, bool):
                raise ParameterError(self.name, "must be true or false")
        elif self.type == "enum":
            # bool is excluded because True == 1 would match a numeric choice.
            if isinstance(value, bool) or value not in (self.choices or ()):
                raise ParameterError(self.name, "must be one of: " + ", ".join(str(c) for c in self.choices or ()))
        elif self.type == "image":
            # Inline base64 becomes the upload id of its bytes (the API stores them): see dispatcher.inputs.
            value = canonical_image(self.name, value)
        if self.min is not None and value < self.min:
            raise ParameterError(self.name, f"must be >= {self.min}")
        if self.max is not None and value > self.max:
            raise ParameterError(self.name, f"must be <= {self.max}")
        return value

    def describe(self) -> dict[str, Any]:
        """The API view of this parameter; fields that are None are left out, except ``type`` and ``required``."""
        view: dict[str, Any] = {"type": self.type, "required": self.required}
        optional = {"default": self.default, "min": self.min, "max": self.max, "description": self.description}
        view.update({key: value for key, value in optional.items() if value is not None})
        if self.choices is not None:
            view["choices"] = list(self.choices)
        return view


@dataclass(frozen=True)
class Workflow:
    """A bundled workflow. ``graph`` is shared by every run: never mutate it, bind a deep copy."""

    id: str
    description: str
    graph: dict[str, Any]
    params: dict[str, Param]
    max_attempts: int
    timeout_seconds: float
    cache: bool
    path: Path | None = None  # the bundled folder it was read from, if any
    version: int = 1
    manifest: dict[str, Any] = dataclasses.field(default_factory=dict)  # as given, or as inferred
    inferred: bool = False  # the manifest was inferred from the graph (none was given)

    def describe(self) -> dict[str, Any]:
        """The API view: ``{"id", "version", "description", "params": {name: {...}}}``."""
        return {
            "id": self.id,
            "version": self.version,
            "description": self.description,
            "params": {name: param.describe() for name, param in self.params.items()},
        }


def check_graph(graph: Any, path: str) -> dict[str, Any]:
    if is_ui_format(graph):  # converting takes node definitions (uiformat.to_api_format): callers that have them do
        raise UIFormatError(path, f"is a workflow in ComfyUI's UI format, not the API format: {EXPORT_HINT}")
    if not isinstance(graph, dict) or not graph:
        raise ManifestError(path, "must be a non-empty object of nodes (ComfyUI API format, not the UI format)")
    for node_id, node in graph.items():
        if not isinstance(node, dict):
            raise ManifestError(path, f"node {node_id!r} must be an object")
        if not isinstance(node.get("class_type"), str) or not node["class_type"]:
            raise ManifestError(path, f"node {node_id!r} has no class_type")
        if not isinstance(node.get("inputs"), dict):
            raise ManifestError(path, f"node {node_id!r} has no inputs object")
        if "_meta" in node and not isinstance(node["_meta"], dict):
            raise ManifestError(path, f"node {node_id!r}: _meta must be an object")
        for name, value in node["inputs"].items():
            if not is_link(value):
                continue
            if len(value) != 2 or not isinstance(value[0], str) or type(value[1]) is not int:
                raise ManifestError(path, f"node {node_id!r} input {name!r}: a link must be [node_id, output_index]")
            if value[0] not in graph:
                raise ManifestError(path, f"node {node_id!r} input {name!r} links to missing node {value[0]!r}")
    return graph


def _number(spec: dict[str, Any], key: str, fail: Fail) -> int | float | None:
    value = spec.get(key)
    if value is None:
        return None
    # An int of hundreds of digits (JSON allows it) is finite but no float: math.isfinite would overflow on it.
    finite = isinstance(value, int) and abs(value) < 2**1023 or isinstance(value, float) and math.isfinite(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not finite:
        fail(f"{key} must be a number")
    if spec.get("type") == "int" and not isinstance(value, int):
        fail(f"{key} must be an integer for an int parameter")
    return value


def _targets(spec: dict[str, Any], fail: Fail) -> tuple[tuple[str, str], ...]:
    if "targets" in spec:
        if "node" in spec or "input" in spec:
            fail("give either node/input or targets, not both")
        raw = spec["targets"]
        if not isinstance(raw, list) or not raw:
            fail('targets must be a non-empty list of {"node", "input"}')
    else:
        raw = [{"node": spec.get("node"), "input": spec.get("input")}]
    targets: list[tuple[str, str]] = []
    for target in raw:
        if not isinstance(target, dict) or set(target) != {"node", "input"}:
            fail("each target must be an object with exactly node and input")
        node, name = target["node"], target["input"]
        # Node ids are JSON object keys (strings); an int in the manifest is an easy slip worth forgiving.
        if isinstance(node, int) and not isinstance(node, bool):
            node = str(node)
        if not isinstance(node, str) or not node or not isinstance(name, str) or not name:
            fail("needs a node id and an input name")
        if (node, name) in targets:
            fail(f"targets node {node!r} input {name!r} twice")
        targets.append((node, name))
    return tuple(targets)


# What a graph value must be for a parameter of each type to be written over it (enum: any choice type).
_GRAPH_KINDS = {"int": (int,), "float": (int, float), "string": (str,), "image": (str,), "bool": (bool,)}


def _param(name: Any, spec: Any, graph: dict[str, Any], path: str) -> Param:
    def fail(detail: str) -> NoReturn:
        raise ManifestError(path, f"param {name!r}: {detail}")

    if not isinstance(name, str) or not name or "::" in name:
        fail("a parameter name must be a non-empty string without '::' (that marks node::input keys)")
    if not isinstance(spec, dict):
        fail("must be an object")
    unknown = sorted(set(spec) - PARAM_KEYS)
    if unknown:
        fail(f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(PARAM_KEYS))}")
    kind = spec.get("type")
    if not isinstance(kind, str) or kind not in PARAM_TYPES:
        fail(f"unknown type {kind!r}; use one of: {', '.join(sorted(PARAM_TYPES))}")
    targets = _targets(spec, fail)
    for node_id, input_name in targets:
        node = graph.get(node_id)
        if node is None:
            fail(f"points at node {node_id!r}, which is not in workflow.json")
        inputs = node["inputs"]
        if input_name not in inputs:
            fail(
                f"node {node_id!r} ({node['class_type']}) has no input {input_name!r}; "
                f"it has: {', '.join(inputs) or 'none'}"
            )
        value = inputs[input_name]
        if is_link(value):
            fail(f"node {node_id!r} input {input_name!r} is a link from another node, not a value")
        kinds = _GRAPH_KINDS.get(kind, (object,))
        # An int param on a string input (or the like) means the manifest names the wrong input.
        if value is not None and (isinstance(value, bool) != (kind == "bool") or not isinstance(value, kinds)):
            fail(f"is {kind} but node {node_id!r} input {input_name!r} holds {value!r}")
    lo, hi = _number(spec, "min", fail), _number(spec, "max", fail)
    if (lo is not None or hi is not None) and kind not in NUMERIC_TYPES:
        fail("min and max apply only to int and float parameters")
    if lo is not None and hi is not None and lo > hi:
        fail(f"min {lo} is greater than max {hi}")
    choices = spec.get("choices")
    if kind == "enum":
        if not isinstance(choices, list) or not choices:
            fail("an enum needs a non-empty list of choices")
        if any(isinstance(c, bool) or not isinstance(c, str | int | float) for c in choices):
            fail("choices must be strings or numbers")
        if len(set(choices)) != len(choices):
            fail("choices repeat a value")
    elif choices is not None:
        fail("choices apply only to enum parameters")
    description = spec.get("description")
    if description is not None and not isinstance(description, str):
        fail("description must be a string")
    default = spec.get("default")
    required = spec.get("required", default is None)
    if not isinstance(required, bool):
        fail("required must be true or false")
    if required and default is not None:
        fail("a required parameter cannot have a default (the default would never be used)")
    param = Param(
        name=name,
        type=kind,
        targets=targets,
        required=required,
        min=lo,
        max=hi,
        choices=tuple(choices) if isinstance(choices, list) else None,
        description=description,
    )
    if default is not None:
        try:
            param = dataclasses.replace(param, default=param.check(default))
        except ParameterError as exc:
            fail(f"default {default!r} {exc.detail}")
    return param


def parse_json(text: str | bytes, where: str) -> Any:
    """Parse JSON ``text``, refusing an object with a key twice (ManifestError naming ``where``)."""

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        # json keeps the last of two equal keys silently; a duplicated node id would vanish unnoticed.
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                raise ManifestError(where, f"key {key!r} appears twice in one object")
            result[key] = value
        return result

    try:
        return json.loads(text, object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as exc:
        raise ManifestError(where, f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    except UnicodeDecodeError as exc:
        raise ManifestError(where, f"is not UTF-8: {exc}") from exc
    except RecursionError:
        raise ManifestError(where, "is nested too deeply to read") from None
    except ValueError as exc:  # an integer of more digits than Python converts (4,300)
        raise ManifestError(where, f"cannot be read: {exc}") from None


def build_workflow(
    workflow_id: str,
    graph: Any,
    manifest: Any,
    *,
    graph_where: str,
    manifest_where: str,
    version: int = 1,
    path: Path | None = None,
    node_definitions: dict[str, Any] | None = None,
) -> Workflow:
    """Validate ``graph`` (API format) and ``manifest`` together into a Workflow.

    ``manifest`` None means there is none: one is inferred from the graph (with the choices and ranges of a
    ComfyUI's ``node_definitions`` where given). ``*_where`` name the two in errors
    (a file path, or the field of a request). Raises :class:`ManifestError` for anything wrong.
    """
    mpath = manifest_where
    if not WORKFLOW_ID_RE.match(workflow_id):
        raise ManifestError(workflow_id, "a workflow id must be url-safe (letters, digits, '.', '_', '-'; 64 at most)")
    graph = check_graph(graph, graph_where)
    inferred = manifest is None
    if manifest is None:
        from dispatcher.workflows.infer import infer_manifest  # noqa: PLC0415 (infer imports this module)

        manifest = infer_manifest(graph, node_definitions)
    if not isinstance(manifest, dict):
        raise ManifestError(mpath, "must be a JSON object")
    unknown = sorted(set(manifest) - MANIFEST_KEYS)
    if unknown:
        allowed = ", ".join(sorted(MANIFEST_KEYS))
        raise ManifestError(mpath, f"unknown field(s) {', '.join(unknown)}; allowed: {allowed}")
    description = manifest.get("description", "")
    if not isinstance(description, str):
        raise ManifestError(mpath, "description must be a string")
    max_attempts = manifest.get("max_attempts", 3)
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        raise ManifestError(mpath, "max_attempts must be an integer >= 1")
    timeout = manifest.get("timeout_seconds", 600)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout < math.inf:
        raise ManifestError(mpath, "timeout_seconds must be a positive number")
    cache = manifest.get("cache", False)
    if not isinstance(cache, bool):
        raise ManifestError(mpath, "cache must be true or false")
    specs = manifest.get("params", {})
    if not isinstance(specs, dict):
        raise ManifestError(mpath, "params must be an object of name -> parameter")
    params = {name: _param(name, spec, graph, mpath) for name, spec in specs.items()}
    # Two parameters writing one input would make the result depend on their order.
    owners: dict[tuple[str, str], str] = {}
    for param in params.values():
        for target in param.targets:
            if target in owners:
                detail = f"node {target[0]!r} input {target[1]!r} is already set by param {owners[target]!r}"
                raise ManifestError(mpath, f"param {param.name!r}: {detail}")
            owners[target] = param.name
    return Workflow(
        workflow_id,
        description,
        graph,
        params,
        max_attempts,
        timeout,
        cache,
        path=path,
        version=version,
        manifest=manifest,
        inferred=inferred,
    )
