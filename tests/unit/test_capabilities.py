"""What a ComfyUI can run and what a run needs (dispatcher.routing): reading /object_info and model folders,
needs of bound graphs, gaps, digests, and what the worker keeps of it. Pure: no Redis, no HTTP."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from dispatcher.fake_comfyui.models import model_folders
from dispatcher.fake_comfyui.schemas import Catalog, build_schemas
from dispatcher.routing.capabilities import (
    KNOWN_LOADERS,
    Capabilities,
    Gap,
    Needs,
    from_comfyui,
    missing,
    needs_of,
)
from dispatcher.routing.defaults import default_needs
from dispatcher.workflows import Param, Registry, Workflow
from tests.conftest import ROOT, TRANSCRIPTS
from worker.capabilities import due, is_switch
from worker.context import WorkerState

EMPTY_IMAGE = json.loads((TRANSCRIPTS / "object_info_EmptyImage.json").read_text())
REGISTRY = Registry.load(ROOT / "workflows")
SD15 = "v1-5-pruned-emaonly.safetensors"


def fake_object_info(models: dict[str, tuple[str, ...]]) -> dict[str, Any]:
    """``/object_info`` of a fake ComfyUI started with ``--models`` ``models`` (its schemas, built in-process)."""
    schemas = build_schemas(Catalog(("photo.png",), model_folders(models)))
    info: dict[str, Any] = json.loads(json.dumps({name: schema.info() for name, schema in schemas.items()}))
    return info


def loader(class_type: str, name: str, values: list[str], *, combo: bool = False) -> dict[str, Any]:
    """A transcript-shaped ``/object_info`` entry of a node with one choice input, in the classic
    ``[[values], {...}]`` form or the newer ``["COMBO", {"options": [...]}]``."""
    spec = ["COMBO", {"options": values}] if combo else [values, {}]
    return {
        class_type: {
            "input": {"required": {name: spec}},
            "input_order": {"required": [name]},
            "output": ["MODEL"],
            "name": class_type,
            "python_module": "custom_nodes.x",
        }
    }


# --- reading a ComfyUI ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("folders", "models"),
    [
        (None, {}),  # an older ComfyUI without /models: EmptyImage loads nothing, so no model is known
        ({"checkpoints": ["a.safetensors"], "loras": []}, {"checkpoints": {"a.safetensors"}, "loras": set()}),
    ],
)
def test_the_recorded_object_info_gives_its_node_class_and_the_listed_files(
    folders: dict[str, list[str]] | None, models: dict[str, set[str]]
) -> None:
    caps = from_comfyui(EMPTY_IMAGE, folders)
    assert caps.nodes == {"EmptyImage"}
    assert {folder: set(files) for folder, files in caps.models.items()} == models
    assert caps.loaders == {}


@pytest.mark.parametrize(
    ("given", "counts"),
    [
        ({}, {"checkpoints": 5}),  # the fake's defaults: the bundled workflows' checkpoints, every other folder empty
        (
            {"checkpoints": ("a.safetensors", "c.safetensors"), "loras": ("l.safetensors",)},
            {"checkpoints": 2, "loras": 1},
        ),
        ({"diffusion_models": ("flux.safetensors",)}, {"checkpoints": 5, "diffusion_models": 1}),
    ],
)
def test_the_fakes_object_info_and_folders_give_its_nodes_files_and_loaders(
    given: dict[str, tuple[str, ...]], counts: dict[str, int]
) -> None:
    folders = model_folders(given)
    caps = from_comfyui(fake_object_info(given), {folder: list(files) for folder, files in folders.items()})
    assert {"EmptyImage", "KSampler", "CheckpointLoaderSimple", "SaveImage", "LoadImage"} <= caps.nodes
    assert caps.model_counts() == counts
    assert caps.models["checkpoints"] == set(folders["checkpoints"])
    assert caps.loaders["CheckpointLoaderSimple"] == {"ckpt_name": "checkpoints"}
    assert caps.loaders["UNETLoader"] == {"unet_name": "diffusion_models"}  # an empty folder: ComfyUI's own table
    assert "LoadImage" not in caps.loaders  # input images are a choice, not a model folder


def test_without_model_folders_the_loaders_lists_are_the_files() -> None:
    info = fake_object_info({"checkpoints": ("a.safetensors",), "vae": ("v.pt",)})
    caps = from_comfyui(info, None)
    assert caps.models["checkpoints"] == {"a.safetensors"}
    assert caps.models["vae"] == {"v.pt"}


@pytest.mark.parametrize("combo", [False, True])
def test_a_custom_loader_is_found_by_its_list_being_a_folders_files(combo: bool) -> None:
    info = {**EMPTY_IMAGE, **loader("MyUpscaler", "upscaler", ["x4.pth", "x2.pth"], combo=combo)}
    caps = from_comfyui(info, {"upscale_models": ["x2.pth", "x4.pth"], "checkpoints": []})
    assert caps.loaders == {"MyUpscaler": {"upscaler": "upscale_models"}}
    assert needs_of({"1": {"class_type": "MyUpscaler", "inputs": {"upscaler": "x4.pth"}}}, caps.loaders) == Needs(
        frozenset({"MyUpscaler"}), frozenset({("upscale_models", "x4.pth")})
    )


def test_a_choice_that_is_no_folders_files_is_no_loader() -> None:
    info = {**EMPTY_IMAGE, **loader("Styler", "style", ["warm", "cold"])}
    assert from_comfyui(info, {"checkpoints": ["a.safetensors"]}).loaders == {}


# --- what a run needs ---------------------------------------------------------------------------------------


def test_the_needs_of_txt2img_are_its_node_classes_and_its_checkpoint() -> None:
    needs = needs_of(REGISTRY.get("txt2img").graph, {})
    assert needs.nodes == {
        "KSampler",
        "CheckpointLoaderSimple",
        "EmptyLatentImage",
        "CLIPTextEncode",
        "VAEDecode",
        "SaveImage",
    }
    assert needs.models == {("checkpoints", SD15)}
    assert needs.checkpoint == f"checkpoints/{SD15}"


@pytest.mark.parametrize(
    ("node", "models"),
    [
        (
            {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "a.safetensors"}},
            {("checkpoints", "a.safetensors")},
        ),
        ({"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ["9", 0]}}, set()),  # a link
        ({"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ""}}, set()),
        ({"class_type": "CheckpointLoaderSimple", "inputs": "broken"}, set()),
        ({"class_type": "LoraLoader", "inputs": {"lora_name": "l.safetensors"}}, {("loras", "l.safetensors")}),
        ({"class_type": "MyLoader", "inputs": {"thing": "t.bin"}}, {("things", "t.bin")}),  # a loader of the fleet's
        ({"class_type": "MyLoader", "inputs": {"other": "t.bin"}}, set()),
    ],
)
def test_needs_of_reads_loader_inputs_only(node: dict[str, Any], models: set[tuple[str, str]]) -> None:
    needs = needs_of({"1": node, "2": "not a node", "3": {"inputs": {}}}, {"MyLoader": {"thing": "things"}})
    assert needs.nodes == {node["class_type"]}
    assert needs.models == models


@pytest.mark.parametrize(
    ("models", "checkpoint"),
    [
        (set(), ""),
        ({("loras", "l.safetensors")}, ""),
        ({("checkpoints", "b.safetensors"), ("checkpoints", "a.safetensors")}, "checkpoints/a.safetensors"),
        ({("diffusion_models", "flux.safetensors"), ("vae", "ae.safetensors")}, "diffusion_models/flux.safetensors"),
    ],
)
def test_the_checkpoint_of_needs_is_their_diffusion_model(models: set[tuple[str, str]], checkpoint: str) -> None:
    assert Needs(frozenset(), frozenset(models)).checkpoint == checkpoint


# --- what a set lacks -----------------------------------------------------------------------------------

CAPS = Capabilities(
    nodes=frozenset({"KSampler", "CheckpointLoaderSimple", "SaveImage"}),
    models={"checkpoints": frozenset({"a.safetensors"}), "loras": frozenset()},
    loaders={"CheckpointLoaderSimple": {"ckpt_name": "checkpoints"}},
)


@pytest.mark.parametrize(
    ("nodes", "models", "gaps"),
    [
        ({"KSampler"}, set(), []),
        ({"KSampler", "SaveImage"}, {("checkpoints", "a.safetensors")}, []),
        ({"Zeta", "Alpha", "KSampler"}, set(), [Gap("Alpha"), Gap("Zeta")]),
        (
            {"KSampler"},
            {("loras", "l.safetensors"), ("checkpoints", "b.safetensors")},
            [Gap("b.safetensors", "checkpoints"), Gap("l.safetensors", "loras")],
        ),
        ({"Alpha"}, {("vae", "v.pt")}, [Gap("Alpha"), Gap("v.pt", "vae")]),  # node classes first
    ],
)
def test_missing_names_each_gap_in_order(nodes: set[str], models: set[tuple[str, str]], gaps: list[Gap]) -> None:
    assert missing(CAPS, Needs(frozenset(nodes), frozenset(models))) == gaps


def test_gaps_read_as_what_they_are() -> None:
    assert str(Gap("Alpha")) == "node class 'Alpha'"
    assert str(Gap("b.safetensors", "checkpoints")) == "model 'b.safetensors' in checkpoints"


# --- digests and records ----------------------------------------------------------------------------------


def test_the_digest_does_not_depend_on_the_order_things_came_in() -> None:
    info = fake_object_info({"checkpoints": ("a.safetensors", "c.safetensors")})
    folders = {
        folder: list(files)
        for folder, files in model_folders({"checkpoints": ("c.safetensors", "a.safetensors")}).items()
    }
    first = from_comfyui(info, folders)
    reversed_info = dict(reversed(list(info.items())))
    reversed_folders = {folder: list(reversed(files)) for folder, files in reversed(list(folders.items()))}
    assert from_comfyui(reversed_info, reversed_folders).digest() == first.digest()


@pytest.mark.parametrize(
    "other",
    [
        replace(CAPS, nodes=CAPS.nodes | {"ImageBlur"}),
        replace(CAPS, models={"checkpoints": frozenset({"a.safetensors", "b.safetensors"})}),
        replace(CAPS, models={"checkpoints": frozenset(), "vae": frozenset({"a.safetensors"})}),
    ],
)
def test_another_node_or_file_is_another_digest(other: Capabilities) -> None:
    assert other.digest() != CAPS.digest()


def test_an_empty_folder_changes_no_digest() -> None:
    assert replace(CAPS, models={"checkpoints": frozenset({"a.safetensors"})}).digest() == CAPS.digest()


@pytest.mark.parametrize(
    "caps",
    [
        Capabilities(frozenset(), {}),
        replace(CAPS, models={"checkpoints": frozenset({"a.safetensors"})}),
        from_comfyui(fake_object_info({"loras": ("l.safetensors",)}), None),
    ],
)
def test_capabilities_survive_their_json(caps: Capabilities) -> None:
    again = Capabilities.from_json(caps.to_json())
    assert (again.nodes, again.loaders) == (caps.nodes, caps.loaders)
    assert again.models == {folder: files for folder, files in caps.models.items() if files}  # empty ones dropped
    assert again.digest() == caps.digest()


# --- a workflow with its defaults ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("workflow", "models"),
    [
        ("invert", set()),
        ("txt2img", {("checkpoints", SD15)}),  # its prompt is required, with no default: it needs no model
    ],
)
def test_default_needs_bind_the_defaults(workflow: str, models: set[tuple[str, str]]) -> None:
    needs = default_needs(REGISTRY.get(workflow), {})
    assert needs is not None
    assert needs.nodes == needs_of(REGISTRY.get(workflow).graph, {}).nodes
    assert needs.models == models


def test_default_needs_take_a_parameters_default_over_the_templates_value() -> None:
    txt2img = REGISTRY.get("txt2img")
    checkpoint = replace(txt2img.params["checkpoint"], default="b.safetensors")
    needs = default_needs(with_param(txt2img, checkpoint), {})
    assert needs is not None and needs.models == {("checkpoints", "b.safetensors")}


@pytest.mark.parametrize("loaders", [{}, {"CheckpointLoaderSimple": {"ckpt_name": "checkpoints"}}])
def test_default_needs_are_unknown_when_a_required_parameter_names_the_model(loaders: dict[str, Any]) -> None:
    txt2img = REGISTRY.get("txt2img")
    checkpoint = replace(txt2img.params["checkpoint"], default=None, required=True)
    assert default_needs(with_param(txt2img, checkpoint), loaders) is None


def with_param(workflow: Workflow, param: Param) -> Workflow:
    return replace(workflow, params={**workflow.params, param.name: param})


# --- what the worker keeps ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "after", "switch"),
    [
        ("", "checkpoints/a.safetensors", False),  # the first model loaded is no switch
        ("checkpoints/a.safetensors", "checkpoints/a.safetensors", False),
        ("checkpoints/a.safetensors", "checkpoints/b.safetensors", True),
        ("checkpoints/a.safetensors", "diffusion_models/a.safetensors", True),
        ("checkpoints/a.safetensors", "", False),  # a run with no model leaves the loaded one
    ],
)
def test_a_switch_is_another_model_after_one(before: str, after: str, switch: bool) -> None:
    assert is_switch(before, after) is switch


@pytest.mark.parametrize(
    ("read_at", "now", "is_due"),
    [(None, 0.0, True), (100.0, 100.0, False), (100.0, 399.9, False), (100.0, 400.0, True)],
)
def test_capabilities_are_read_again_when_never_read_or_old(read_at: float | None, now: float, is_due: bool) -> None:
    assert due(WorkerState(caps_read_at=read_at), 300.0, now) is is_due


def test_known_loaders_name_folders_the_fake_serves() -> None:
    folders = set(model_folders({}))
    assert {folder for inputs in KNOWN_LOADERS.values() for folder in inputs.values()} <= folders
