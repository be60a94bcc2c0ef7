"""What one node class is, as ``/object_info`` shows it and validation reads it: :class:`NodeSchema`.

Classic (V1) nodes render as ComfyUI 0.3.64's ``node_info()``; nodes written with its V3 schema
(``comfy_api.latest``, e.g. ``SaveVideo``) as V3's ``get_v1_info`` renders them. Combo inputs of V3 nodes are
``("COMBO", {"options": [...], ...})`` rather than a list of choices.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

MAX_RESOLUTION = 16384
ANY = "*"
SAVE_PREFIX_TIP = (
    "The prefix for the file to save. This may include formatting information such as %date:yyyy-MM-dd% "
    "or %Empty Latent Image.width% to include values from nodes."
)


@dataclass(frozen=True)
class Catalog:
    """The machine-dependent combo lists: image files in the input folder, files of each model folder."""

    input_images: tuple[str, ...] = ()
    models: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def files(self, folder: str) -> list[str]:
        """A loader's combo list: the folder's files (a new list each time, as ``get_filename_list``)."""
        return list(self.models.get(folder, ()))


@dataclass(frozen=True)
class NodeSchema:
    """One node class. ``inputs`` maps category (required/optional/hidden) to name -> spec, in order."""

    name: str
    inputs: dict[str, dict[str, Any]]
    returns: tuple[str, ...]
    category: str
    display_name: str | None = None
    description: str = ""
    python_module: str = "nodes"
    output_node: bool = False
    output_tooltips: tuple[str, ...] | None = None
    is_async: bool = False
    return_names: tuple[str, ...] | None = None
    # Inputs checked by the node's own VALIDATE_INPUTS instead of the generic min/max/combo checks.
    self_validated: tuple[str, ...] = field(default=())
    # A node written with ComfyUI's V3 schema (comfy_api.latest.io): /object_info renders it as V3's
    # get_v1_info does (hidden inputs as one-item lists, output_tooltips always, experimental/deprecated/api_node).
    v3: bool = False
    experimental: bool = False

    def input_info(self, name: str) -> tuple[Any, str, dict[str, Any]] | None:
        """(type, category, options) of an input, as ComfyUI's ``get_input_info``."""
        for category in ("required", "optional", "hidden"):
            spec = self.inputs.get(category, {}).get(name)
            if spec is None:
                continue
            if category == "hidden":
                return spec, category, {}
            options = spec[1] if len(spec) > 1 else {}
            return spec[0], category, options
        return None

    def info(self) -> dict[str, Any]:
        """The ``/object_info`` entry."""
        if self.v3:
            return self._v3_info()
        out: dict[str, Any] = {
            "input": jsonable(self.inputs),
            "input_order": {category: list(specs) for category, specs in self.inputs.items()},
            "output": list(self.returns),
            "output_is_list": [False] * len(self.returns),
            "output_name": list(self.return_names or self.returns),
            "name": self.name,
            "display_name": self.display_name or self.name,
            "description": self.description,
            "python_module": self.python_module,
            "category": self.category,
            "output_node": self.output_node,
        }
        if self.output_tooltips is not None:
            out["output_tooltips"] = list(self.output_tooltips)
        return out

    def _v3_info(self) -> dict[str, Any]:
        inputs = jsonable({k: v for k, v in self.inputs.items() if k != "hidden"})
        if "hidden" in self.inputs:
            inputs["hidden"] = {name: [kind] for name, kind in self.inputs["hidden"].items()}
        return {
            "input": inputs,
            "input_order": {category: list(specs) for category, specs in self.inputs.items()},
            "output": list(self.returns),
            "output_is_list": [False] * len(self.returns),
            "output_name": list(self.return_names or self.returns),
            "output_tooltips": list(self.output_tooltips or (None,) * len(self.returns)),
            "name": self.name,
            "display_name": self.display_name,
            "category": self.category,
            "description": self.description,
            "output_node": self.output_node,
            "deprecated": False,
            "experimental": self.experimental,
            "api_node": False,
            "python_module": self.python_module,
        }


def jsonable(value: Any) -> Any:
    """Tuples as lists, all the way down: what ``json.dumps`` makes of a schema."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def int_input(default: int, lo: int, hi: int, step: int | None = 1, **extra: Any) -> tuple[str, dict[str, Any]]:
    opts: dict[str, Any] = {"default": default, "min": lo, "max": hi}
    if step is not None:
        opts["step"] = step
    opts.update(extra)
    return ("INT", opts)


def float_input(default: float, lo: float, hi: float, step: float, **extra: Any) -> tuple[str, dict[str, Any]]:
    return ("FLOAT", {"default": default, "min": lo, "max": hi, "step": step, **extra})


def combo_input(options: list[str], **extra: Any) -> tuple[str, dict[str, Any]]:
    """A V3 node's combo: ``COMBO`` with its options (V3's ``Combo.Input.as_dict``: tooltip, default, then these)."""
    return ("COMBO", {**extra, "multiselect": False, "options": options})


def combo_choices(input_type: Any, options: Mapping[str, Any]) -> list[Any] | None:
    """The allowed values of a combo input (a V1 list, or V3's ``COMBO`` options); None for other inputs."""
    if isinstance(input_type, list):
        return input_type
    if input_type == "COMBO":
        return list(options.get("options") or [])
    return None
