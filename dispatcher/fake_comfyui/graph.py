"""Prompt validation and execution order, as ComfyUI 0.3.64 does them (pure: no I/O).

``validate_prompt`` mirrors ``execution.validate_prompt``/``validate_inputs``: the same error types, messages,
``node_errors`` layout, and the same in-place conversion of widget values (the queued prompt, and so the
history, holds the converted values). ``execution_order`` mirrors ``comfy_execution.graph.ExecutionList``
with ``ux_friendly_pick_node``: output and async nodes first, then nodes one or two hops before an output.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dispatcher.fake_comfyui.nodeschema import combo_choices
from dispatcher.fake_comfyui.schemas import NodeSchema, types_match

# A node's own VALIDATE_INPUTS: gets the node's constant inputs, returns True, False or a reason.
Validator = Callable[[Mapping[str, Any]], "bool | str"]

# What a malformed graph raises while being walked (missing node, bad slot, wrong JSON type);
# ComfyUI reports these as exception_during_(inner_)validation instead of failing the request.
_GRAPH_ERRORS = (KeyError, IndexError, TypeError, RecursionError)


@dataclass
class Validation:
    """Outcome of :func:`validate_prompt`: ``error`` is the 400 body's ``error`` when ``ok`` is false."""

    ok: bool
    error: dict[str, Any] | None
    outputs: list[str]
    node_errors: dict[str, Any] = field(default_factory=dict)


def _error(kind: str, message: str, details: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"type": kind, "message": message, "details": details, "extra_info": extra if extra is not None else {}}


def full_type_name(cls: type) -> str:
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def is_link(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int | float)
        and not isinstance(value[1], bool)
    )


def validate_prompt(
    prompt: dict[str, Any],
    schemas: Mapping[str, NodeSchema],
    *,
    partial_targets: list[str] | None = None,
    validators: Mapping[str, Validator] | None = None,
) -> Validation:
    """Check a prompt before it is queued; ``prompt`` must be a dict of dicts (else the caller answers 500)."""
    outputs: list[str] = []
    for node_id, node in prompt.items():
        if "class_type" not in node:
            message = "Cannot execute because a node is missing the class_type property."
            return Validation(False, _error("invalid_prompt", message, f"Node ID '#{node_id}'"), [])
        schema = schemas.get(node["class_type"])
        if schema is None:
            message = f"Cannot execute because node {node['class_type']} does not exist."
            return Validation(False, _error("invalid_prompt", message, f"Node ID '#{node_id}'"), [])
        if schema.output_node and (partial_targets is None or node_id in partial_targets):
            outputs.append(node_id)
    if not outputs:
        return Validation(False, _error("prompt_no_outputs", "Prompt has no outputs", ""), [])

    checker = _Checker(prompt, schemas, validators or {})
    good: list[str] = []
    failed: list[tuple[str, list[dict[str, Any]]]] = []
    node_errors: dict[str, Any] = {}
    for output in outputs:
        try:
            valid, reasons = checker.check(output)
        except _GRAPH_ERRORS as exc:
            valid = False
            reasons = [
                _error(
                    "exception_during_validation",
                    "Exception when validating node",
                    str(exc),
                    {"exception_type": full_type_name(type(exc)), "traceback": traceback.format_tb(exc.__traceback__)},
                )
            ]
            checker.validated[output] = (False, reasons)
        if valid:
            good.append(output)
            continue
        failed.append((output, reasons))
        # As ComfyUI: every failed node seen so far is blamed on this output, even one upstream of another.
        for node_id, (node_ok, node_reasons) in checker.validated.items():
            if not node_ok and node_reasons:
                class_type = prompt[node_id]["class_type"]
                entry = node_errors.setdefault(
                    node_id, {"errors": node_reasons, "dependent_outputs": [], "class_type": class_type}
                )
                entry["dependent_outputs"].append(output)
    if not good:
        details = "\n".join(f"{e['message']}: {e['details']}" for _, reasons in failed for e in reasons)
        error = _error("prompt_outputs_failed_validation", "Prompt outputs failed validation", details)
        return Validation(False, error, [], node_errors)
    return Validation(True, None, good, node_errors)


class _Checker:
    """validate_inputs for every node reachable from an output, memoised per node."""

    def __init__(
        self, prompt: dict[str, Any], schemas: Mapping[str, NodeSchema], validators: Mapping[str, Validator]
    ) -> None:
        self.prompt = prompt
        self.schemas = schemas
        self.validators = validators
        self.validated: dict[str, tuple[bool, list[dict[str, Any]]]] = {}
        self._visiting: set[str] = set()

    def check(self, node_id: str) -> tuple[bool, list[dict[str, Any]]]:
        if node_id in self.validated:
            return self.validated[node_id]
        if node_id in self._visiting:
            # ComfyUI recurses until Python's limit on a cycle; report the same exception without waiting for it.
            raise RecursionError("maximum recursion depth exceeded")
        self._visiting.add(node_id)
        try:
            result = self._check_node(node_id)
        finally:
            self._visiting.discard(node_id)
        self.validated[node_id] = result
        return result

    def _check_node(self, node_id: str) -> tuple[bool, list[dict[str, Any]]]:
        node = self.prompt[node_id]
        inputs: dict[str, Any] = node["inputs"]
        schema = self.schemas[node["class_type"]]
        errors: list[dict[str, Any]] = []
        valid = True
        names = [*schema.inputs.get("required", {}), *schema.inputs.get("optional", {})]
        for name in names:
            found = schema.input_info(name)
            assert found is not None
            input_type, category, options = found
            if name not in inputs:
                if category == "required":
                    errors.append(
                        _error("required_input_missing", "Required input is missing", name, {"input_name": name})
                    )
                continue
            value = inputs[name]
            config = [input_type, options]
            if isinstance(value, list):
                if len(value) != 2:
                    message = "Bad linked input, must be a length-2 list of [node_id, slot_index]"
                    errors.append(
                        _error(
                            "bad_linked_input",
                            message,
                            name,
                            {"input_name": name, "input_config": config, "received_value": value},
                        )
                    )
                    continue
                source_id = value[0]
                received = self.schemas[self.prompt[source_id]["class_type"]].returns[value[1]]
                if not types_match(received, input_type):
                    details = f"{name}, received_type({received}) mismatch input_type({input_type})"
                    errors.append(
                        _error(
                            "return_type_mismatch",
                            "Return type mismatch between linked nodes",
                            details,
                            {
                                "input_name": name,
                                "input_config": config,
                                "received_type": received,
                                "linked_node": value,
                            },
                        )
                    )
                    continue
                try:
                    if not self.check(source_id)[0]:
                        valid = False
                except _GRAPH_ERRORS as exc:
                    valid = False
                    self.validated[source_id] = (
                        False,
                        [
                            _error(
                                "exception_during_inner_validation",
                                "Exception when validating inner node",
                                str(exc),
                                {
                                    "input_name": name,
                                    "input_config": config,
                                    "exception_message": str(exc),
                                    "exception_type": full_type_name(type(exc)),
                                    "traceback": traceback.format_tb(exc.__traceback__),
                                    "linked_node": value,
                                },
                            )
                        ],
                    )
                continue
            error = self._check_value(schema, inputs, name, input_type, options, config)
            if error is not None:
                errors.append(error)
        errors.extend(self._custom(schema, inputs))
        return (valid and not errors), errors

    @staticmethod
    def _check_value(
        schema: NodeSchema,
        inputs: dict[str, Any],
        name: str,
        input_type: Any,
        options: dict[str, Any],
        config: list[Any],
    ) -> dict[str, Any] | None:
        value = inputs[name]
        if isinstance(value, dict) and "__value__" in value:
            value = inputs[name] = value["__value__"]
        converters: dict[str, Callable[[Any], Any]] = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}
        convert = converters.get(input_type) if isinstance(input_type, str) else None
        if convert is not None:
            try:
                value = inputs[name] = convert(value)
            except (ValueError, TypeError, OverflowError) as exc:
                return _error(
                    "invalid_input_type",
                    f"Failed to convert an input value to a {input_type} value",
                    f"{name}, {value}, {exc}",
                    {
                        "input_name": name,
                        "input_config": config,
                        "received_value": value,
                        "exception_message": str(exc),
                    },
                )
        if name in schema.self_validated:
            return None
        extra = {"input_name": name, "input_config": config, "received_value": value}
        if "min" in options and value < options["min"]:
            return _error("value_smaller_than_min", f"Value {value} smaller than min of {options['min']}", name, extra)
        if "max" in options and value > options["max"]:
            return _error("value_bigger_than_max", f"Value {value} bigger than max of {options['max']}", name, extra)
        choices = combo_choices(input_type, options)  # a V1 list, or a V3 node's COMBO options
        if choices is not None and value not in choices:
            # As ComfyUI: long option lists (model files) are summarised, not echoed back.
            listing = f"(list of length {len(choices)})" if len(choices) > 20 else str(choices)
            if len(choices) > 20:
                extra["input_config"] = None
            return _error("value_not_in_list", "Value not in list", f"{name}: '{value}' not in {listing}", extra)
        return None

    def _custom(self, schema: NodeSchema, inputs: dict[str, Any]) -> list[dict[str, Any]]:
        validator = self.validators.get(schema.name)
        given = {name: inputs[name] for name in schema.self_validated if name in inputs}
        if validator is None or not given or any(is_link(v) for v in given.values()):
            return []
        verdict = validator(given)
        if verdict is True:
            return []
        suffix = "" if verdict is False else f" - {verdict}"
        return [
            _error(
                "custom_validation_failed", "Custom validation failed for node", f"{name}{suffix}", {"input_name": name}
            )
            for name in given
        ]


def execution_order(prompt: Mapping[str, Any], schemas: Mapping[str, NodeSchema], outputs: list[str]) -> list[str]:
    """The order ComfyUI runs the nodes needed by ``outputs`` (success_invert: 1, 4, 2, 3)."""
    pending: dict[str, None] = {}
    block_count: dict[str, int] = {}
    blocking: dict[str, dict[str, None]] = {}

    def add(root: str) -> None:
        stack = [root]
        links: list[tuple[str, str]] = []
        while stack:
            node_id = stack.pop()
            if node_id in pending:
                continue
            pending[node_id] = None
            block_count[node_id] = 0
            blocking[node_id] = {}
            inputs = prompt[node_id].get("inputs")
            for value in (inputs if isinstance(inputs, dict) else {}).values():
                if is_link(value):
                    stack.append(value[0])
                    links.append((value[0], node_id))
        for source, target in links:
            if target not in blocking[source]:
                blocking[source][target] = None
                block_count[target] += 1

    def is_output(node_id: str) -> bool:
        return schemas[prompt[node_id]["class_type"]].output_node

    def pick(ready: list[str]) -> str:
        for node_id in ready:
            if is_output(node_id) or schemas[prompt[node_id]["class_type"]].is_async:
                return node_id
        for node_id in ready:
            if any(is_output(b) for b in blocking[node_id]):
                return node_id
        for node_id in ready:
            if any(is_output(b2) for b in blocking[node_id] for b2 in blocking[b]):
                return node_id
        return ready[0]

    for output in outputs:
        add(output)
    order: list[str] = []
    while pending:
        ready = [node_id for node_id in pending if block_count[node_id] == 0]
        if not ready:
            raise ValueError(f"dependency cycle among nodes {sorted(pending)}")
        chosen = pick(ready)
        order.append(chosen)
        del pending[chosen]
        for blocked in blocking.pop(chosen):
            block_count[blocked] -= 1
    return order
