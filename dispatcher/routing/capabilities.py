"""What a ComfyUI can run (its node classes and model files) and what a run needs: pure, no I/O.

A worker reads its ComfyUI's ``/object_info`` (every node class, with each input's type: a list of values for
a choice) and ``/models/{folder}`` (the files of each model folder). An input whose list of values *is* a model
folder's file list is a loader input of that folder: ``CheckpointLoaderSimple.ckpt_name`` of ``checkpoints``,
a custom node's ``model_name`` of ``upscale_models``... so custom loaders are found without a table. Where a
ComfyUI does not serve ``/models/{folder}``, the well-known loaders (:data:`KNOWN_LOADERS`) name their folder.

A run needs every ``class_type`` of its bound graph and the file each loader input names. Capabilities are
stored once per distinct set, under their :meth:`Capabilities.digest` (a thousand workers with the same
nodes and files share one record); :func:`missing` says what a set lacks for a run, naming each gap.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

DIFFUSION_FOLDERS = ("checkpoints", "diffusion_models")
"""Folders of the models a GPU keeps loaded between prompts (what affinity is about)."""

KNOWN_LOADERS: dict[str, dict[str, str]] = {
    "CheckpointLoaderSimple": {"ckpt_name": "checkpoints"},
    "CheckpointLoader": {"ckpt_name": "checkpoints"},
    "ImageOnlyCheckpointLoader": {"ckpt_name": "checkpoints"},
    "UNETLoader": {"unet_name": "diffusion_models"},
    "LoraLoader": {"lora_name": "loras"},
    "LoraLoaderModelOnly": {"lora_name": "loras"},
    "VAELoader": {"vae_name": "vae"},
    "CLIPLoader": {"clip_name": "text_encoders"},
    "DualCLIPLoader": {"clip_name1": "text_encoders", "clip_name2": "text_encoders"},
    "TripleCLIPLoader": {"clip_name1": "text_encoders", "clip_name2": "text_encoders", "clip_name3": "text_encoders"},
    "CLIPVisionLoader": {"clip_name": "clip_vision"},
    "ControlNetLoader": {"control_net_name": "controlnet"},
    "DiffControlNetLoader": {"control_net_name": "controlnet"},
    "UpscaleModelLoader": {"model_name": "upscale_models"},
    "StyleModelLoader": {"style_model_name": "style_models"},
    "GLIGENLoader": {"gligen_name": "gligen"},
    "HypernetworkLoader": {"hypernetwork_name": "hypernetworks"},
}
"""ComfyUI's own loaders: (class, input) -> folder, for a ComfyUI that does not list its folders' files."""

Loaders = Mapping[str, Mapping[str, str]]  # class_type -> input name -> model folder


@dataclass(frozen=True)
class Capabilities:
    """The node classes a ComfyUI has, its model files per folder, and which inputs load from which folder."""

    nodes: frozenset[str]
    models: Mapping[str, frozenset[str]]
    loaders: Loaders = field(default_factory=dict)

    def digest(self) -> str:
        """The same for the same nodes and files, whatever the order they came in."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:32]

    def to_json(self) -> str:
        return json.dumps(
            {
                "nodes": sorted(self.nodes),
                "models": {folder: sorted(files) for folder, files in sorted(self.models.items()) if files},
                "loaders": {cls: dict(sorted(inputs.items())) for cls, inputs in sorted(self.loaders.items())},
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> Capabilities:
        data = json.loads(text)
        return cls(
            nodes=frozenset(data.get("nodes", ())),
            models={folder: frozenset(files) for folder, files in data.get("models", {}).items()},
            loaders={c: dict(inputs) for c, inputs in data.get("loaders", {}).items()},
        )

    def items(self) -> list[str]:
        """Every node class and model file as a token (``node:KSampler``, ``model:checkpoints/a.safetensors``):
        what the dispatch script looks runs' needs up in (a Redis set per capability set)."""
        return [f"node:{n}" for n in self.nodes] + [
            f"model:{folder}/{name}" for folder, files in self.models.items() for name in files
        ]

    def model_counts(self) -> dict[str, int]:
        return {folder: len(files) for folder, files in sorted(self.models.items()) if files}


def choices(spec: Any) -> list[str] | None:
    """The values an input of ``object_info`` allows, if it is a choice: ``[[...], {...}]`` or the newer
    ``["COMBO", {"options": [...]}]``; None for any other input."""
    if not isinstance(spec, list) or not spec:
        return None
    kind = spec[0]
    if isinstance(kind, list):
        return [v for v in kind if isinstance(v, str)]
    if kind == "COMBO" and len(spec) > 1 and isinstance(spec[1], dict):
        options = spec[1].get("options")
        return [v for v in options if isinstance(v, str)] if isinstance(options, list) else None
    return None


def from_comfyui(object_info: Mapping[str, Any], folders: Mapping[str, Iterable[str]] | None) -> Capabilities:
    """The capabilities a ComfyUI's ``/object_info`` and its folders' file lists (``/models/{folder}``; None
    where it does not serve them) say it has."""
    listed = {folder: frozenset(files) for folder, files in (folders or {}).items()}
    by_listing = {files: folder for folder, files in listed.items() if files}
    loaders: dict[str, dict[str, str]] = {}
    models: dict[str, set[str]] = {folder: set(files) for folder, files in listed.items()}
    for class_type, schema in object_info.items():
        inputs = schema.get("input", {}) if isinstance(schema, Mapping) else {}
        known = KNOWN_LOADERS.get(class_type, {})
        for section in ("required", "optional"):
            for name, spec in (inputs.get(section) or {}).items():
                values = choices(spec)
                if values is None:
                    continue
                folder = by_listing.get(frozenset(values)) or known.get(name)
                if folder is None:
                    continue
                loaders.setdefault(class_type, {})[name] = folder
                if folder not in listed:  # no /models/{folder}: the loader's own list is what it holds
                    models.setdefault(folder, set()).update(values)
    return Capabilities(
        nodes=frozenset(object_info),
        models={folder: frozenset(files) for folder, files in models.items()},
        loaders=loaders,
    )


def checkpoint_tag(checkpoint: str) -> str:
    """How routes name a checkpoint ("checkpoints/a.safetensors"): a short sha1, '-' for none."""
    return hashlib.sha1(checkpoint.encode()).hexdigest()[:12] if checkpoint else "-"


@dataclass(frozen=True)
class Needs:
    """What a run needs of a ComfyUI: node classes, and (folder, file) of every model its loaders name."""

    nodes: frozenset[str]
    models: frozenset[tuple[str, str]]

    @property
    def checkpoint(self) -> str:
        """The diffusion model the run loads ('' for none): the one a GPU keeps loaded between prompts."""
        found = sorted(f"{folder}/{name}" for folder, name in self.models if folder in DIFFUSION_FOLDERS)
        return found[0] if found else ""

    def tokens(self) -> list[str]:
        """The needs as items of a capability set (:meth:`Capabilities.items`), sorted."""
        return sorted([f"node:{n}" for n in self.nodes] + [f"model:{folder}/{name}" for folder, name in self.models])

    def to_text(self) -> str:
        """As a run record keeps them: the tokens, one per line (a file name may hold spaces, not newlines)."""
        return "\n".join(self.tokens())

    @classmethod
    def from_text(cls, text: str) -> Needs:
        nodes: set[str] = set()
        models: set[tuple[str, str]] = set()
        for token in filter(None, text.split("\n")):
            kind, _, rest = token.partition(":")
            if kind == "node":
                nodes.add(rest)
            elif kind == "model":
                folder, _, name = rest.partition("/")
                models.add((folder, name))
        return cls(frozenset(nodes), frozenset(models))


def needs_of(graph: Mapping[str, Any], loaders: Loaders) -> Needs:
    """What the bound ``graph`` (API format) needs; ``loaders`` say which inputs name model files (those of
    the fleet's capability sets, with :data:`KNOWN_LOADERS` for what no set names)."""
    nodes: set[str] = set()
    models: set[tuple[str, str]] = set()
    for node in graph.values():
        if not isinstance(node, Mapping):
            continue
        class_type = node.get("class_type")
        if not isinstance(class_type, str):
            continue
        nodes.add(class_type)
        given = node.get("inputs")
        inputs: Mapping[str, Any] = given if isinstance(given, Mapping) else {}
        folders = {**KNOWN_LOADERS.get(class_type, {}), **loaders.get(class_type, {})}
        for name, folder in folders.items():
            value = inputs.get(name)
            if isinstance(value, str) and value:  # a link ([node, slot]) is not a file name
                models.add((folder, value))
    return Needs(frozenset(nodes), frozenset(models))


@dataclass(frozen=True)
class Gap:
    """Something a capability set lacks for a run: a node class (``folder`` empty) or a model file."""

    name: str
    folder: str = ""

    def __str__(self) -> str:
        return f"model {self.name!r} in {self.folder}" if self.folder else f"node class {self.name!r}"


def missing(capabilities: Capabilities, needs: Needs) -> list[Gap]:
    """What ``capabilities`` lacks for ``needs``, nodes first, in name order; empty when it can run it."""
    gaps = [Gap(name) for name in sorted(needs.nodes - capabilities.nodes)]
    gaps += [
        Gap(name, folder)
        for folder, name in sorted(needs.models)
        if name not in capabilities.models.get(folder, frozenset())
    ]
    return gaps


def merged_loaders(sets: Iterable[Capabilities]) -> dict[str, dict[str, str]]:
    """The loader inputs any of ``sets`` knows of (class -> input -> folder)."""
    merged: dict[str, dict[str, str]] = {}
    for capabilities in sets:
        for class_type, inputs in capabilities.loaders.items():
            merged.setdefault(class_type, {}).update(inputs)
    return merged
