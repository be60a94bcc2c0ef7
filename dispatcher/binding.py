"""Binding a run's request body into a copy of its workflow's graph. Pure functions, no I/O.

One body may use any mix of these forms:

1. named parameters from the manifest: ``{"params": {"prompt": "...", "seed": 7}}``
   (FlowAI's ``{"input": {...}}`` is read the same way);
2. Comflowy's ``"node_id::input"`` keys inside ``params``: ``{"params": {"6::text": "..."}}``;
3. the Flask seed's simple form ``{"prompt": "...", "target_node": "6"}`` at top level;
4. the Flask seed's advanced form ``{"6": {"inputs": {"text": "..."}}}`` at top level.

A raw ``node::input`` value that lands on an input a manifest parameter targets counts as that parameter,
so the manifest's type and range rules apply and the parameter's other targets get the same value.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dispatcher.errors import BadRequest, ParameterError
from dispatcher.inputs import mark_image_input
from dispatcher.workflows import Param, Workflow, is_link

RUN_OPTION_KEYS = frozenset(
    {
        "priority",
        "callback_urls",
        "stream",
        "cache",
        "wait",
        "timeout_seconds",
        "max_attempts",
        "metadata",
        "webhook",
        "workflow_id",
        "input",
        "version",
    }
)
NATIVE_OPTION_KEYS = frozenset({"priority", "callback_urls", "stream", "cache", "timeout_seconds", "version"})
"""The run options the native API's body takes. The rest of :data:`RUN_OPTION_KEYS` are other products' fields,
which their compatibility routes accept (and ignore): the native route refuses them (:func:`refuse_options`)."""
# What a native client sending another product's field most likely meant.
OPTION_HINTS = {
    "wait": "use the ?wait= query parameter",
    "workflow_id": "the workflow is the one named in the URL",
    "max_attempts": "the workflow's manifest sets it",
}
PARAMS_KEYS = ("params", "input")
SIMPLE_FORM_KEYS = ("prompt", "target_node")
SEED_INPUTS = frozenset({"seed", "noise_seed"})
PREFIX_INPUT = "filename_prefix"
# The digest must not see the run id that bind() appends to every filename_prefix.
PREFIX_PLACEHOLDER = "<filename_prefix>"
RUN_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
TEXT_NODE_MARKERS = ("Text Multiline", "TextMultiline")


@dataclass(frozen=True)
class Bound:
    """A workflow graph with a run's values bound.

    ``graph`` is a deep copy ready to post to ComfyUI; ``params`` holds every named parameter's resolved
    value (defaults included); ``overrides`` the raw ``"node::input"`` values the body set directly.
    """

    graph: dict[str, Any]
    params: dict[str, Any]
    overrides: dict[str, Any]


def bind(workflow: Workflow, body: Mapping[str, Any], *, run_id: str) -> Bound:
    """Validate ``body`` against ``workflow`` and return the bound graph.

    Raises :class:`ParameterError` naming the parameter or key for any value that does not fit, and
    :class:`BadRequest` if ``body`` is not an object. ``run_id`` must be a short url-safe string: it
    is appended to every ``filename_prefix`` so outputs of different runs never collide and ComfyUI's
    cache never skips a save node.
    """
    if not RUN_ID_RE.match(run_id):
        raise ValueError(f"run id {run_id!r} is not a short url-safe string")
    if not isinstance(body, Mapping):
        raise BadRequest("a run body must be a JSON object")
    named, raw = _collect(workflow, body)
    values, overrides = _resolve(workflow, named, raw)
    params: dict[str, Any] = {}
    for name, param in workflow.params.items():
        if name in values:
            params[name] = values[name]
        elif param.default is not None:
            params[name] = param.default
        elif param.required:
            raise ParameterError(name, "is required")
    graph = _copy_graph(workflow.graph)
    for name, value in params.items():
        for node_id, input_name in workflow.params[name].targets:
            graph[node_id]["inputs"][input_name] = value
            if workflow.params[name].type == "image":
                mark_image_input(graph[node_id], input_name, name)  # the worker resolves marked inputs only
    for key, value in overrides.items():
        node_id, _, input_name = key.rpartition("::")
        graph[node_id]["inputs"][input_name] = value
    for node in graph.values():
        prefix = node["inputs"].get(PREFIX_INPUT)
        if isinstance(prefix, str):
            node["inputs"][PREFIX_INPUT] = unique_prefix(prefix, run_id)
    return Bound(graph=graph, params=params, overrides=overrides)


def _copy_graph(graph: dict[str, Any]) -> dict[str, Any]:
    """A copy of the template as deep as binding writes (each node, its ``inputs`` and ``_meta``): the values
    inside are replaced, never changed in place, so they may stay shared. A deepcopy costs ten times more."""
    copied: dict[str, Any] = {}
    for node_id, node in graph.items():
        copied[node_id] = dict(node)
        for part in ("inputs", "_meta"):
            if isinstance(node.get(part), dict):
                copied[node_id][part] = dict(node[part])
    return copied


def image_values(workflow: Workflow, body: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """``(parameter, value)`` for each value ``body`` gives an image parameter, in any form; not checked.

    What the API needs before binding: the inline images themselves, to store them (binding keeps only
    their ids). Raises what :func:`bind` raises for a body it cannot read.
    """
    named, raw = _collect(workflow, body)
    owner = {target: param for param in workflow.params.values() for target in param.targets}
    found = [(n, v) for n, v in named.items() if n in workflow.params and workflow.params[n].type == "image"]
    for key, value in raw:
        node_id, _, input_name = key.rpartition("::")
        param = owner.get((node_id, input_name))
        if param is not None and param.type == "image":
            found.append((param.name, value))
    return [(name, value) for name, value in found if value is not None]


def unique_prefix(prefix: str, run_id: str) -> str:
    """Append the run id to a filename_prefix, keeping its subfolder: ``portraits/face`` -> ``portraits/face_<id>``."""
    if not prefix or prefix.endswith(("/", "\\")):
        return prefix + run_id
    return f"{prefix}_{run_id}"


def fixes_every_seed(workflow: Workflow, bound: Bound) -> bool:
    """True when every ``seed``/``noise_seed`` input of the bound graph is a literal integer.

    Only then does the same graph give the same images, so only then may a result be reused. A seed
    fed by a link (a random-number node, a primitive) counts as not fixed. ``workflow`` is taken so
    callers need not change if a manifest later declares other sources of randomness.
    """
    for node in bound.graph.values():
        for name, value in node["inputs"].items():
            if name in SEED_INPUTS and (isinstance(value, bool) or not isinstance(value, int)):
                return False
    return True


def bound_digest(workflow_id: str, bound: Bound) -> str:
    """A sha256 hex digest of the workflow id and the bound graph, blind to the per-run filename_prefix."""
    graph = {}
    for node_id, node in bound.graph.items():
        inputs = node["inputs"]
        if isinstance(inputs.get(PREFIX_INPUT), str):
            node = {**node, "inputs": {**inputs, PREFIX_INPUT: PREFIX_PLACEHOLDER}}
        graph[node_id] = node
    payload = json.dumps(
        {"workflow_id": workflow_id, "graph": graph}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def refuse_options(body: Mapping[str, Any], accepted: frozenset[str] = NATIVE_OPTION_KEYS) -> None:
    """Raise ParameterError naming the first top-level field of ``body`` that is a run option outside ``accepted``.

    Any other unknown field is refused by :func:`bind` itself; this refuses those it lets through for the
    compatibility routes, so a native client's ``max_attempts`` or ``metadata`` is not silently dropped.
    """
    for key in body:
        if key in RUN_OPTION_KEYS and key not in accepted and key not in PARAMS_KEYS:
            takes = ", ".join(["params (or input)", *sorted(accepted), "prompt, target_node and node ids"])
            hint = f" ({OPTION_HINTS[key]})" if key in OPTION_HINTS else ""
            raise ParameterError(key, f"unknown field{hint}; a run body takes: {takes}")


def _collect(workflow: Workflow, body: Mapping[str, Any]) -> tuple[dict[str, Any], list[tuple[str, Any]]]:
    """Split a body into named values and raw ``(node::input, value)`` pairs, rejecting unknown keys."""
    named: dict[str, Any] = {}
    raw: list[tuple[str, Any]] = []
    for key, value in body.items():
        if key in PARAMS_KEYS:
            if value is None:
                continue
            if not isinstance(value, Mapping):
                raise ParameterError(key, "must be an object of parameter values")
            for name, item in value.items():
                if "::" in name:
                    raw.append((name, item))
                elif name in named:
                    raise ParameterError(name, "is given in both params and input")
                else:
                    named[name] = item
        elif key in RUN_OPTION_KEYS or key in SIMPLE_FORM_KEYS:
            continue
        elif key in workflow.graph:
            if not isinstance(value, Mapping) or set(value) != {"inputs"} or not isinstance(value["inputs"], Mapping):
                raise ParameterError(key, 'must be an object of the form {"inputs": {"input_name": value}}')
            raw.extend((f"{key}::{name}", item) for name, item in value["inputs"].items())
        else:
            raise ParameterError(
                key, 'unknown key: not a run option nor a node id of this workflow; put named parameters under "params"'
            )
    if "target_node" in body and "prompt" not in body:
        raise ParameterError("target_node", "needs a prompt to write into that node")
    if "prompt" in body:
        prompt = body["prompt"]
        if not isinstance(prompt, str):
            raise ParameterError("prompt", "must be a string")
        raw.append((f"{_text_node(workflow.graph, body.get('target_node'))}::text", prompt))
    return named, raw


def _is_text_node(node: Mapping[str, Any]) -> bool:
    if "text" not in node["inputs"] or is_link(node["inputs"]["text"]):
        return False  # nothing this form could write without cutting a link
    class_type: str = node["class_type"]
    return (
        isinstance(node["inputs"]["text"], str)
        or class_type == "CLIPTextEncode"
        or any(marker in class_type for marker in TEXT_NODE_MARKERS)
    )


def _text_node(graph: Mapping[str, Any], target: Any) -> str:
    """The node the simple form's prompt goes to: ``target`` if given, else the first text node in order."""
    if target is None:
        for node_id, node in graph.items():
            if _is_text_node(node):
                return str(node_id)
        raise ParameterError("prompt", "No suitable text input node found in workflow")
    if isinstance(target, bool) or not isinstance(target, str | int):
        raise ParameterError("target_node", "must be a node id")
    node_id = str(target)
    if node_id not in graph:
        raise ParameterError("target_node", f"Target node {node_id} is not a text input node (no such node)")
    if not _is_text_node(graph[node_id]):
        raise ParameterError("target_node", f"Target node {node_id} is not a text input node")
    return node_id


def _resolve(
    workflow: Workflow, named: Mapping[str, Any], raw: list[tuple[str, Any]]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Check every value; return the named values given (directly or through node::input) and the raw values."""
    values: dict[str, Any] = {}
    source: dict[str, str] = {}  # parameter -> the key that set it, for conflict messages
    for name, value in named.items():
        param = workflow.params.get(name)
        if param is None:
            takes = ", ".join(workflow.params) or "no parameters"
            raise ParameterError(name, f"unknown parameter; this workflow takes: {takes}")
        if value is None:
            continue  # JSON null asks for the default, as most API clients expect
        values[name] = _checked_prefix(name, param.check(value), param.targets)
        source[name] = name
    owner = {target: param for param in workflow.params.values() for target in param.targets}
    applied: dict[str, Any] = {}
    for key, value in raw:
        node_id, input_name = _locate(workflow.graph, key)
        param = owner.get((node_id, input_name))
        if param is not None:
            try:
                checked = param.check(value)
            except ParameterError as exc:
                raise ParameterError(key, f"{exc.detail} (parameter {param.name!r})") from None
            checked = _checked_prefix(key, checked, param.targets)
            if param.name in values and values[param.name] != checked:
                raise ParameterError(key, f"conflicts with the value given for {source[param.name]!r}")
            values[param.name] = checked
            source.setdefault(param.name, key)
        else:
            checked = _checked_prefix(
                key, _check_plain(key, value, workflow.graph[node_id]["inputs"][input_name]), ((node_id, input_name),)
            )
        if key in applied and applied[key] != checked:
            raise ParameterError(key, "is given twice with different values")
        applied[key] = checked
    return values, applied


def _locate(graph: Mapping[str, Any], key: str) -> tuple[str, str]:
    """Split ``node::input`` and check the input exists and holds a value (not a link)."""
    node_id, _, input_name = key.rpartition("::")
    if not node_id or not input_name:
        raise ParameterError(key, "must be of the form node_id::input_name")
    node = graph.get(node_id)
    if node is None:
        raise ParameterError(key, f"node {node_id} is not in this workflow")
    inputs = node["inputs"]
    if input_name not in inputs:
        raise ParameterError(
            key,
            f"node {node_id} ({node['class_type']}) has no input {input_name!r}; it has: {', '.join(inputs) or 'none'}",
        )
    if is_link(inputs[input_name]):
        raise ParameterError(
            key, f"input {input_name!r} of node {node_id} is a link from node {inputs[input_name][0]}, not a value"
        )
    return node_id, input_name


def _check_plain(key: str, value: Any, current: Any) -> Any:
    """Check a raw value for an input no parameter owns: a scalar of the same kind as the graph's value."""
    # A list would reach ComfyUI as a link and an object as garbage: only scalars (bool is an int) may be written.
    if not isinstance(value, str | int | float):
        raise ParameterError(key, "must be a string, a number or a boolean")
    if isinstance(current, bool):
        kind = "bool"
    elif isinstance(current, int):
        kind = "int"
    elif isinstance(current, float):
        kind = "float"
    elif isinstance(current, str):
        kind = "string"
    else:
        return value
    return Param(name=key, type=kind, targets=()).check(value)


def _checked_prefix(key: str, value: Any, targets: tuple[tuple[str, str], ...]) -> Any:
    """Refuse a filename_prefix that would climb out of ComfyUI's output folder."""
    if any(input_name == PREFIX_INPUT for _, input_name in targets) and isinstance(value, str):
        parts = re.split(r"[/\\]", value)
        if value.startswith(("/", "\\")) or ".." in parts or re.match(r"^[A-Za-z]:", value):
            raise ParameterError(key, "must be a relative path inside the output folder")
    return value
