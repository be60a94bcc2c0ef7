"""Parameter inference: the manifest a graph without one is given. Pure, no I/O.

From an API-format graph, :func:`infer_manifest` finds:

* ``prompt`` and ``negative_prompt``: the text inputs behind each sampler's (or guider's) ``positive`` and
  ``negative``, followed back through conditioning nodes (ConditioningCombine, ControlNetApplyAdvanced,
  InpaintModelConditioning, FluxGuidance...) to the text encoders; every text input of one encoder is a
  target of the same parameter (CLIPTextEncodeSDXL's ``text_g`` and ``text_l``);
* ``seed``, ``steps``, ``cfg``, ``sampler``, ``scheduler``, ``denoise`` of the sampling nodes (KSampler,
  KSamplerAdvanced's ``noise_seed``, RandomNoise, KSamplerSelect, BasicScheduler, CFGGuider...);
* ``width``, ``height``, ``batch_size`` of the empty latents;
* the file of each model loader, named by its folder (``checkpoint``, ``lora``, ``vae``, ``controlnet``...);
* each ``LoadImage`` as an ``image`` parameter (``LoadImageMask``: ``mask``).

An input fed by a primitive node (PrimitiveInt, PrimitiveString...) is written in the primitive's ``value``;
one fed by any other node is no parameter. Types, ranges and choices come from the node definitions when given
(a ComfyUI's ``/object_info``), else from ComfyUI 0.3.64's own (:mod:`dispatcher.workflows.comfy_nodes`).

**Names.** A kind found once takes its plain name. Found in several nodes (two samplers, two images), every one
of them is named ``<node id>.<name>`` (``3.seed``, ``10.seed``): inference never picks one silently. An
input shared by several nodes (one primitive feeding two samplers) is one parameter.

**Defaults.** Every parameter is optional, its default the graph's own value, so the graph runs as it was
saved and a run sets only what it changes; a hand-written manifest is the way to make a prompt required. Image
parameters are the exception: required, because the graph's value names a file of one ComfyUI's input folder,
which a run cannot use (:mod:`dispatcher.inputs`). Model files are strings, not choices: each worker has its
own, and routing sends a run where its files are. A graph value that does not fit the known range or choices
(a newer ComfyUI) keeps the parameter, without that range or as a plain string.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from dispatcher.errors import ParameterError
from dispatcher.routing.capabilities import KNOWN_LOADERS
from dispatcher.workflows import comfy_nodes as known
from dispatcher.workflows.comfy_nodes import Role
from dispatcher.workflows.manifest import Param, is_link
from dispatcher.workflows.uiformat import node_order

log = logging.getLogger(__name__)

DESCRIPTION = (
    "Inferred from the graph (no manifest was given). A parameter named <node id>.<name> is one of several "
    "of that kind in the graph."
)
IMAGE_HELP = "an http(s) URL, base64 data (raw or a data: URI) or upload:<id> from POST /v1/uploads"
PROMPT_ROLES = {"positive": Role("prompt", "string", "positive prompt"),
                "negative": Role("negative_prompt", "string", "negative prompt")}  # fmt: skip
ORDER = ("prompt", "negative_prompt", *dict.fromkeys(r.name for r in known.SAMPLER_INPUTS.values()),
         *known.LATENT_INPUTS, *known.FOLDER_PARAMS.values(), "image", "mask")  # fmt: skip
DEF_TYPES = {"INT": "int", "FLOAT": "float", "STRING": "string", "BOOLEAN": "bool"}

Graph = Mapping[str, Any]
Definitions = Mapping[str, Any]
Target = tuple[str, str]


@dataclass(frozen=True)
class _Candidate:
    """One parameter found: its plain name, where it writes, and its manifest entry (without the targets)."""

    name: str
    targets: tuple[Target, ...]
    spec: dict[str, Any]

    @property
    def node(self) -> str:
        return self.targets[0][0]


def infer_manifest(graph: Graph, node_defs: Definitions | None = None) -> dict[str, Any]:
    """The manifest ``graph`` (API format, already checked) gets when none is given: what
    :func:`~dispatcher.workflows.manifest.build_workflow` accepts. ``node_defs`` is a ComfyUI's ``/object_info``."""
    defs = node_defs or {}
    found = [*_prompts(graph, defs), *_sampling(graph, defs), *_latents(graph, defs), *_loaders(graph, defs)]
    found += _images(graph)
    return {"description": DESCRIPTION, "params": _named(found)}


def render_manifest(manifest: Mapping[str, Any]) -> str:
    """The manifest as ``manifest.json`` would hold it."""
    return json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"


def render_summary(manifest: Mapping[str, Any]) -> str:
    """One line per parameter: name, type, required or its default, and the ``node::input`` it sets."""
    lines = []
    for name, spec in (manifest.get("params") or {}).items():
        targets = spec.get("targets") or [{"node": spec.get("node"), "input": spec.get("input")}]
        where = ", ".join(f"{t['node']}::{t['input']}" for t in targets)
        value = "required" if spec.get("required") else f"default {json.dumps(spec.get('default'))[:40]}"
        lines.append(f"{name}\t{spec.get('type')}\t{value}\t{where}")
    return "\n".join(lines) + ("\n" if lines else "")


# --- reading the graph ----------------------------------------------------------------------------------------


def _class(graph: Graph, node_id: str) -> str:
    return str(graph[node_id].get("class_type", ""))


def _inputs(graph: Graph, node_id: str) -> Mapping[str, Any]:
    inputs = graph[node_id].get("inputs")
    return inputs if isinstance(inputs, Mapping) else {}


def _source(graph: Graph, node_id: str, name: str) -> tuple[Target, Any] | None:
    """Where the value of an input lives and what it is: the input itself, or the ``value`` of the primitive node
    that feeds it; None when another node computes it."""
    value = _inputs(graph, node_id).get(name)
    if value is None:
        return None
    if not is_link(value):
        return (node_id, name), value
    origin = str(value[0]) if value else ""
    if origin in graph and _class(graph, origin) in known.PRIMITIVE_CLASSES:
        primitive = _inputs(graph, origin).get("value")
        if primitive is not None and not is_link(primitive):
            return (origin, "value"), primitive
    return None


def _definition(defs: Definitions, class_type: str, name: str) -> tuple[Any, Mapping[str, Any]] | None:
    """The (type, options) of an input in the node definitions, or None."""
    definition = defs.get(class_type)
    inputs = definition.get("input") if isinstance(definition, Mapping) else None
    for group in ("required", "optional"):
        specs = inputs.get(group) if isinstance(inputs, Mapping) else None
        spec = specs.get(name) if isinstance(specs, Mapping) else None
        if isinstance(spec, list | tuple) and spec:
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], Mapping) else {}
            return spec[0], options
    return None


def _def_type(defs: Definitions, class_type: str, name: str) -> str | None:
    found = _definition(defs, class_type, name)
    if found is None:
        return None
    kind = found[0]
    return "COMBO" if isinstance(kind, list) else str(kind)


# --- building one parameter -------------------------------------------------------------------------------------


def _candidate(
    role: Role, targets: tuple[Target, ...], value: Any, graph: Graph, defs: Definitions, note: str = ""
) -> _Candidate | None:
    """The parameter ``role`` of ``targets`` holding ``value``: typed, ranged and checked against the value."""
    node_id, name = targets[0]
    kind, lo, hi = role.type, role.min, role.max
    choices: tuple[Any, ...] | None = role.choices
    found = _definition(defs, _class(graph, node_id), name)
    if found is not None:
        def_kind, options = found
        listed = def_kind if isinstance(def_kind, list) else options.get("options") if def_kind == "COMBO" else None
        if isinstance(listed, list) and role.type == "enum":
            choices = tuple(c for c in listed if isinstance(c, str | int | float) and not isinstance(c, bool))
        elif isinstance(def_kind, str) and def_kind in DEF_TYPES and role.type not in ("enum", "image"):
            kind = DEF_TYPES[def_kind]
        if kind in ("int", "float"):
            lo, hi = _bound(options.get("min"), kind, lo), _bound(options.get("max"), kind, hi)
    where = ", ".join(n for _, n in targets)
    spec: dict[str, Any] = {"type": kind}
    if role.type == "image":
        spec.update(required=True, description=f"{role.label} ({_class(graph, node_id)} {node_id}): {IMAGE_HELP}")
        return _Candidate(role.name, targets, spec)
    param = Param(role.name, kind, (), min=lo, max=hi, choices=choices if kind == "enum" else None)
    default = _fit(param, value)
    if default is None and param.choices is not None:  # a choice this ComfyUI's list lacks
        param = replace(param, type="string", choices=None)
        default = _fit(param, value)
    if default is None and (param.min is not None or param.max is not None):  # a value outside the known range
        param = replace(param, min=None, max=None)
        default = _fit(param, value)
    if default is None:
        log.info("node %s input %s holds %r, not a %s: no %s parameter", node_id, name, value, kind, role.name)
        return None
    spec = {"type": param.type, "required": False, "default": default}
    spec.update({k: v for k, v in (("min", param.min), ("max", param.max)) if v is not None})
    if param.choices is not None:
        spec["choices"] = list(param.choices)
    spec["description"] = f"{role.label} ({_class(graph, node_id)} {node_id}: {where}){note}"
    return _Candidate(role.name, targets, spec)


def _bound(value: Any, kind: str, fallback: int | float | None) -> int | float | None:
    """A definition's min or max, if it suits a parameter of ``kind`` (an int one takes only integers), and is
    finite: ComfyUI writes ``Infinity`` for an unbounded one, which a manifest refuses."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not _finite(value):
        return fallback
    return value if kind == "float" or isinstance(value, int) else fallback


def _finite(value: int | float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer beyond any float, which the manifest's check cannot take either
        return False


# What a graph value must be for a parameter of each type to be written over it (as build_workflow checks).
_HOLDS: dict[str, tuple[type, ...]] = {
    "int": (int,), "float": (int, float), "string": (str,), "bool": (bool,), "enum": (str, int, float),
}  # fmt: skip


def _fit(param: Param, value: Any) -> Any:
    """``value`` in the parameter's canonical form, or None when it does not fit."""
    if isinstance(value, bool) != (param.type == "bool") or not isinstance(value, _HOLDS[param.type]):
        return None
    try:
        return param.check(value)
    except ParameterError:
        return None


# --- what a graph holds ---------------------------------------------------------------------------------------


def _prompts(graph: Graph, defs: Definitions) -> Iterator[_Candidate]:
    roles: dict[str, set[str]] = {}  # text encoder -> the roles it feeds
    for node_id in graph:
        for name, fed_role in _consumer_inputs(graph, node_id).items():
            value = _inputs(graph, node_id).get(name)
            if isinstance(value, list) and len(value) == 2:
                for encoder in _encoders(graph, defs, str(value[0]), value[1]):
                    roles.setdefault(encoder, set()).add(fed_role)
    for encoder, fed in roles.items():
        sources = [_source(graph, encoder, name) for name in _text_inputs(graph, defs, encoder)]
        texts = [s for s in sources if s is not None and isinstance(s[1], str)]
        if not texts:
            continue
        role = PROMPT_ROLES["positive" if "positive" in fed else "negative"]
        note = "; it feeds a negative input too" if len(fed) > 1 else ""
        # One primitive may feed two texts of an encoder (text_g and text_l): one target, written once.
        where = tuple(dict.fromkeys(target for target, _ in texts))
        found = _candidate(role, where, texts[0][1], graph, defs, note)
        if found is not None:
            yield found


def _consumer_inputs(graph: Graph, node_id: str) -> dict[str, str]:
    """The conditioning inputs of a sampler or guider, and the role of each (positive or negative)."""
    class_type = _class(graph, node_id)
    if class_type in known.CONDITIONING_CONSUMERS:
        return known.CONDITIONING_CONSUMERS[class_type]
    inputs = _inputs(graph, node_id)
    if ("Sampler" in class_type or "Guider" in class_type) and is_link(inputs.get("positive")):
        return {name: name for name in ("positive", "negative") if is_link(inputs.get(name))}
    return {}


def _encoders(graph: Graph, defs: Definitions, origin: str, slot: Any) -> set[str]:
    """The text encoders whose text reaches output ``slot`` of node ``origin`` through conditioning nodes."""
    found: set[str] = set()
    pending, seen = [(origin, slot)], set()
    while pending:
        node_id, out = pending.pop()
        if (node_id, out) in seen or node_id not in graph or _class(graph, node_id) in known.NOT_FOLLOWED:
            continue
        seen.add((node_id, out))
        if _text_inputs(graph, defs, node_id):
            found.add(node_id)
        for name in _conditioning_inputs(graph, defs, node_id, out):
            value = _inputs(graph, node_id).get(name)
            if isinstance(value, list) and len(value) == 2:
                pending.append((str(value[0]), value[1]))
    return found


def _conditioning_inputs(graph: Graph, defs: Definitions, node_id: str, slot: Any) -> list[str]:
    """The inputs whose conditioning flows to output ``slot``: of a node with a positive and a negative input
    (ControlNetApplyAdvanced, InpaintModelConditioning), the one of the same role; else every conditioning one."""
    inputs = _inputs(graph, node_id)
    if "positive" in inputs and "negative" in inputs:
        return [{0: "positive", 1: "negative"}[slot]] if slot in (0, 1) else []
    class_type = _class(graph, node_id)
    if class_type in defs:
        return [name for name in inputs if _def_type(defs, class_type, name) == "CONDITIONING"]
    return [name for name in inputs if "cond" in name and is_link(inputs[name])]


def _text_inputs(graph: Graph, defs: Definitions, node_id: str) -> list[str]:
    """The prompt inputs of a text encoder (empty for any other node)."""
    class_type, inputs = _class(graph, node_id), _inputs(graph, node_id)
    if class_type in defs:
        names = [name for name in inputs if _def_type(defs, class_type, name) == "STRING"]
    else:
        names = list(known.TEXT_INPUTS.get(class_type, known.FALLBACK_TEXT_INPUTS))
    return [name for name in names if name in inputs and _source(graph, node_id, name) is not None]


def _sampling(graph: Graph, defs: Definitions) -> Iterator[_Candidate]:
    for node_id in graph:
        class_type = _class(graph, node_id)
        if class_type not in known.SAMPLING_CLASSES and "KSampler" not in class_type:
            if not _consumer_inputs(graph, node_id):
                continue
        # A sampler that adds no noise (SDXL's refiner pass) ignores its seed: no parameter that changes nothing.
        silent = graph[node_id]["inputs"].get("add_noise") == "disable"
        for name, role in known.SAMPLER_INPUTS.items():
            if not (silent and name == "noise_seed"):
                yield from _plain(role, graph, defs, node_id, name)


def _latents(graph: Graph, defs: Definitions) -> Iterator[_Candidate]:
    for node_id in graph:
        if known.is_latent_class(_class(graph, node_id)):
            for name, role in known.LATENT_INPUTS.items():
                yield from _plain(role, graph, defs, node_id, name)


def _loaders(graph: Graph, defs: Definitions) -> Iterator[_Candidate]:
    for node_id in graph:
        files = KNOWN_LOADERS.get(_class(graph, node_id), {})
        for name, folder in files.items():
            base = known.FOLDER_PARAMS.get(folder, folder)
            siblings = [n for n, f in files.items() if f == folder]
            if len(siblings) > 1:  # DualCLIPLoader: text_encoder_1, text_encoder_2
                base = f"{base}_{siblings.index(name) + 1}"
            role = Role(base, "string", f"model file in ComfyUI's models/{folder}")
            yield from _plain(role, graph, defs, node_id, name)


def _plain(role: Role, graph: Graph, defs: Definitions, node_id: str, name: str) -> Iterator[_Candidate]:
    source = _source(graph, node_id, name)
    if source is not None:
        note = f", feeding {_class(graph, node_id)} {node_id} {name}" if source[0][0] != node_id else ""
        found = _candidate(role, (source[0],), source[1], graph, defs, note)
        if found is not None:
            yield found


def _images(graph: Graph) -> list[_Candidate]:
    found = []
    for node_id in graph:
        loader = known.IMAGE_LOADERS.get(_class(graph, node_id))
        if loader is not None and isinstance(_inputs(graph, node_id).get(loader[0]), str):
            role = Role(loader[1], "image", "input image" if loader[1] == "image" else "input mask image")
            found.append(_candidate(role, ((node_id, loader[0]),), None, graph, {}))
    return [c for c in found if c is not None]


# --- naming -----------------------------------------------------------------------------------------------------


def _named(found: list[_Candidate]) -> dict[str, Any]:
    """The parameters by name: a kind found once takes its plain name, each of several ``<node>.<name>``."""
    unique: dict[tuple[str, tuple[Target, ...]], _Candidate] = {}
    for candidate in found:
        unique.setdefault((candidate.name, candidate.targets), candidate)
    by_name: dict[str, list[_Candidate]] = {}
    for candidate in unique.values():
        by_name.setdefault(candidate.name, []).append(candidate)
    params: dict[str, Any] = {}
    owned: set[Target] = set()
    rank = {name: index for index, name in enumerate(ORDER)}
    for name in sorted(by_name, key=lambda n: rank.get(n, len(ORDER))):
        group = sorted(by_name[name], key=lambda c: node_order(c.node))
        for candidate in group:
            if owned & set(candidate.targets):
                continue  # an input two kinds claim (a primitive feeding a seed and a width) stays with the first
            label = name if len(group) == 1 else f"{candidate.node}.{name}"
            if label in params:  # one node holding two of a kind
                label = f"{candidate.node}.{candidate.targets[0][1]}"
            owned.update(candidate.targets)
            params[label] = _with_targets(candidate)
    return params


def _with_targets(candidate: _Candidate) -> dict[str, Any]:
    if len(candidate.targets) == 1:
        where: dict[str, Any] = {"node": candidate.targets[0][0], "input": candidate.targets[0][1]}
    else:
        where = {"targets": [{"node": node, "input": name} for node, name in candidate.targets]}
    return {**where, **candidate.spec}
