"""The workflows registry: bundled workflows load, and every broken manifest fails loudly by name."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from dispatcher.binding import bind
from dispatcher.errors import ManifestError, ParameterError, WorkflowNotFound
from dispatcher.workflows import Param, Registry, load_workflow

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
BUNDLED = ["animated-webp", "blur-slow", "img2img", "invert", "sd15-inpaint", "sdxl-txt2img", "txt2img"]
IMAGE = "https://example.com/x.png"  # image parameters take URLs, base64 or upload ids (dispatcher.inputs)

GRAPH: dict[str, Any] = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 512, "height": 512, "batch_size": 1, "color": 0}},
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {
        "class_type": "SaveImage",
        "inputs": {"images": ["2", 0], "filename_prefix": "invert"},
        "_meta": {"title": "Save"},
    },
    "4": {"class_type": "KSamplerish", "inputs": {"sampler_name": "euler", "cfg": 7.0, "flag": True, "name": "x"}},
}
MANIFEST: dict[str, Any] = {
    "description": "test",
    "max_attempts": 2,
    "timeout_seconds": 30,
    "cache": True,
    "params": {
        "width": {"node": "1", "input": "width", "type": "int", "default": 512, "min": 1, "max": 4096},
        "color": {"node": "1", "input": "color", "type": "int", "default": 0, "min": 0, "max": 16777215},
    },
}


def write(folder: Path, manifest: Any = None, graph: Any = None) -> Path:
    """Write a workflow folder; a str is written verbatim (for bad JSON), anything else as JSON."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in (
        ("manifest.json", MANIFEST if manifest is None else manifest),
        ("workflow.json", GRAPH if graph is None else graph),
    ):
        (folder / name).write_text(content if isinstance(content, str) else json.dumps(content))
    return folder


def with_param(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    manifest = copy.deepcopy(MANIFEST)
    manifest["params"][name] = spec
    return manifest


# --- bundled workflows -------------------------------------------------------------------------------


@pytest.mark.parametrize("workflow_id", BUNDLED)
def test_bundled_workflow_loads_and_binds_its_defaults(workflow_id: str) -> None:
    workflow = load_workflow(WORKFLOWS / workflow_id)
    assert workflow.id == workflow_id and workflow.path == WORKFLOWS / workflow_id
    body = {
        "params": {name: IMAGE if p.type == "image" else "a cat" for name, p in workflow.params.items() if p.required}
    }
    bound = bind(workflow, body, run_id="r1")
    assert set(bound.params) == set(workflow.params)
    view = workflow.describe()
    assert view["id"] == workflow_id and set(view["params"]) == set(workflow.params)
    assert all({"type", "required"} <= set(p) and None not in p.values() for p in view["params"].values())


def test_registry_loads_every_bundled_workflow_sorted() -> None:
    registry = Registry.load(WORKFLOWS)
    assert [w.id for w in registry.all()] == BUNDLED
    assert len(registry) == len(BUNDLED) and "txt2img" in registry and "nope" not in registry
    assert registry.get("invert").params["color"].description == "fill colour as 0xRRGGBB integer"


@pytest.mark.parametrize(
    ("workflow_id", "node_id", "class_type", "inputs"),
    [
        (
            "txt2img",
            "3",
            "KSampler",
            {
                "seed",
                "steps",
                "cfg",
                "sampler_name",
                "scheduler",
                "denoise",
                "model",
                "positive",
                "negative",
                "latent_image",
            },
        ),
        ("txt2img", "4", "CheckpointLoaderSimple", {"ckpt_name"}),
        ("txt2img", "5", "EmptyLatentImage", {"width", "height", "batch_size"}),
        ("txt2img", "6", "CLIPTextEncode", {"text", "clip"}),
        ("txt2img", "8", "VAEDecode", {"samples", "vae"}),
        ("img2img", "10", "LoadImage", {"image"}),
        ("img2img", "11", "VAEEncode", {"pixels", "vae"}),
        ("blur-slow", "2", "ImageBlur", {"image", "blur_radius", "sigma"}),
        ("invert", "1", "EmptyImage", {"width", "height", "batch_size", "color"}),
        ("sdxl-txt2img", "5", "EmptyLatentImage", {"width", "height", "batch_size"}),
        ("sd15-inpaint", "1", "LoadImage", {"image"}),
        ("sd15-inpaint", "9", "VAEEncodeForInpaint", {"grow_mask_by", "pixels", "vae", "mask"}),
    ],
)
def test_bundled_graphs_use_real_comfyui_inputs(
    workflow_id: str, node_id: str, class_type: str, inputs: set[str]
) -> None:
    node = load_workflow(WORKFLOWS / workflow_id).graph[node_id]
    assert node["class_type"] == class_type and set(node["inputs"]) == inputs


@pytest.mark.parametrize(
    "body",
    [
        {"params": {"prompt": "a cat"}},
        {"input": {"prompt": "a cat"}},
        {"params": {"3::sampler_name": "euler", "6::text": "a cat"}, "callback_urls": {"on_result_url": "u"}},
        {"prompt": "a cat"},
        {"prompt": "a cat", "target_node": "6"},
        {"6": {"inputs": {"text": "a cat"}}, "3": {"inputs": {"steps": 4}}},
    ],
)
def test_seed_body_forms_bind_on_bundled_txt2img(body: dict[str, Any]) -> None:
    bound = bind(load_workflow(WORKFLOWS / "txt2img"), body, run_id="r1")
    assert bound.params["prompt"] == "a cat" and bound.graph["6"]["inputs"]["text"] == "a cat"
    assert bound.graph["7"]["inputs"]["text"] == "" and bound.graph["9"]["inputs"]["filename_prefix"] == "txt2img_r1"


def test_bundled_specifics() -> None:
    txt2img = load_workflow(WORKFLOWS / "txt2img")
    assert txt2img.params["prompt"].required and txt2img.params["seed"].max == 2**64 - 1
    assert txt2img.params["scheduler"].choices == (
        "normal",
        "karras",
        "exponential",
        "sgm_uniform",
        "simple",
        "ddim_uniform",
        "beta",
    )
    img2img = load_workflow(WORKFLOWS / "img2img")
    assert img2img.params["image"].type == "image" and img2img.params["image"].required
    assert img2img.params["denoise"].default == 0.75 and img2img.graph["3"]["inputs"]["latent_image"] == ["11", 0]
    blur = load_workflow(WORKFLOWS / "blur-slow")
    assert blur.timeout_seconds == 600 and blur.graph["1"]["inputs"]["batch_size"] == 4
    assert load_workflow(WORKFLOWS / "invert").graph["1"]["inputs"]["batch_size"] == 1


# --- loading a valid tmp workflow --------------------------------------------------------------------


def test_load_valid_workflow(tmp_path: Path) -> None:
    workflow = load_workflow(write(tmp_path / "demo"))
    assert (workflow.id, workflow.max_attempts, workflow.timeout_seconds, workflow.cache) == ("demo", 2, 30, True)
    assert workflow.params["width"] == Param(
        name="width", type="int", targets=(("1", "width"),), default=512, required=False, min=1, max=4096
    )
    assert workflow.describe()["params"]["width"] == {
        "type": "int",
        "required": False,
        "default": 512,
        "min": 1,
        "max": 4096,
    }


def test_manifest_defaults(tmp_path: Path) -> None:
    workflow = load_workflow(write(tmp_path / "w", {"params": {}}))
    assert (workflow.description, workflow.max_attempts, workflow.timeout_seconds, workflow.cache) == (
        "",
        3,
        600,
        False,
    )


@pytest.mark.parametrize(
    ("spec", "required"),
    [
        ({"default": 1}, False),
        ({}, True),
        ({"required": False}, False),
        ({"required": True}, True),
    ],
)
def test_required_defaults_to_having_no_default(tmp_path: Path, spec: dict[str, Any], required: bool) -> None:
    manifest = with_param("n", {"node": "1", "input": "batch_size", "type": "int", **spec})
    assert load_workflow(write(tmp_path / "w", manifest)).params["n"].required is required


def test_targets_and_int_node_ids(tmp_path: Path) -> None:
    manifest = with_param(
        "size",
        {
            "targets": [{"node": 1, "input": "height"}, {"node": "1", "input": "batch_size"}],
            "type": "int",
            "default": 1,
        },
    )
    manifest["params"].pop("width")
    workflow = load_workflow(write(tmp_path / "w", manifest))
    assert workflow.params["size"].targets == (("1", "height"), ("1", "batch_size"))


def test_enum_and_float_params(tmp_path: Path) -> None:
    manifest = with_param(
        "sampler",
        {"node": "4", "input": "sampler_name", "type": "enum", "choices": ["euler", "ddim"], "default": "ddim"},
    )
    manifest["params"]["cfg"] = {"node": "4", "input": "cfg", "type": "float", "default": 7, "min": 0, "max": 30}
    workflow = load_workflow(write(tmp_path / "w", manifest))
    assert workflow.params["sampler"].choices == ("euler", "ddim")
    assert workflow.params["cfg"].default == 7.0 and isinstance(workflow.params["cfg"].default, float)


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        (10**309, "must be a finite number; this one is too large for a float"),
        (-(10**400), "must be a finite number; this one is too large for a float"),
        (int("9" * 4000), "must be a finite number; this one is too large for a float"),
        (float("inf"), "must be a finite number"),
        (10**308, "must be <= 30"),
    ],
    ids=["1e309", "-1e400", "4000 nines", "inf", "1e308"],
)
def test_a_float_param_refuses_what_no_float_holds(value: int | float, detail: str) -> None:
    cfg = Param(name="cfg", type="float", targets=(("4", "cfg"),), max=30)
    with pytest.raises(ParameterError) as caught:
        cfg.check(value)
    assert caught.value.param == "cfg" and caught.value.detail == detail


@pytest.mark.parametrize(
    ("value", "canonical"),
    [(7, 7.0), (2**53, 2.0**53), (10**308, 1e308), (-3.5, -3.5)],
    ids=["7", "2^53", "1e308", "-3.5"],
)
def test_a_float_param_takes_every_integer_a_float_holds(value: int | float, canonical: float) -> None:
    assert Param(name="f", type="float", targets=()).check(value) == canonical


# --- manifest errors name the file and the parameter -------------------------------------------------

BAD_PARAMS: list[tuple[dict[str, Any], str]] = [
    ({"node": "9", "input": "width", "type": "int"}, "not in workflow.json"),
    ({"node": "1", "input": "widht", "type": "int"}, "has no input 'widht'"),
    ({"node": "2", "input": "image", "type": "image"}, "is a link"),
    ({"node": "1", "input": "width", "type": "integer"}, "unknown type 'integer'"),
    ({"node": "1", "input": "width"}, "unknown type None"),
    ({"node": "1", "input": "width", "type": "int", "default": 0, "min": 1}, "default 0 must be >= 1"),
    ({"node": "1", "input": "width", "type": "int", "default": 9000, "max": 4096}, "default 9000 must be <= 4096"),
    ({"node": "1", "input": "width", "type": "int", "default": 1.5}, "must be an integer"),
    ({"node": "1", "input": "width", "type": "int", "default": "512"}, "must be an integer"),
    ({"node": "4", "input": "sampler_name", "type": "enum", "choices": ["a"], "default": "b"}, "must be one of: a"),
    ({"node": "4", "input": "sampler_name", "type": "enum"}, "non-empty list of choices"),
    ({"node": "4", "input": "sampler_name", "type": "enum", "choices": []}, "non-empty list of choices"),
    ({"node": "4", "input": "sampler_name", "type": "enum", "choices": ["a", "a"]}, "repeat"),
    ({"node": "4", "input": "sampler_name", "type": "enum", "choices": [["a"]]}, "strings or numbers"),
    ({"node": "1", "input": "width", "type": "int", "min": 10, "max": 1}, "min 10 is greater than max 1"),
    ({"node": "1", "input": "width", "type": "int", "min": 1.5}, "min must be an integer"),
    ({"node": "1", "input": "width", "type": "int", "max": "9"}, "max must be a number"),
    ({"node": "4", "input": "name", "type": "string", "min": 1}, "only to int and float"),
    ({"node": "1", "input": "width", "type": "int", "choices": [1]}, "only to enum"),
    ({"node": "1", "input": "width", "type": "int", "defualt": 1}, "unknown field(s) defualt"),
    ({"node": "1", "input": "width", "type": "int", "required": "yes"}, "required must be true or false"),
    ({"node": "1", "input": "width", "type": "int", "required": True, "default": 1}, "cannot have a default"),
    ({"node": "1", "input": "width", "type": "int", "description": 5}, "description must be a string"),
    ({"node": "1", "input": "width", "type": "string"}, "is string but node '1' input 'width' holds 512"),
    ({"node": "4", "input": "name", "type": "int"}, "is int but"),
    ({"node": "4", "input": "flag", "type": "int"}, "is int but"),
    ({"node": "1", "input": "width", "type": "bool"}, "is bool but"),
    ({"type": "int"}, "needs a node id and an input name"),
    ({"targets": [], "type": "int"}, "non-empty list"),
    ({"targets": [{"node": "1"}], "type": "int"}, "exactly node and input"),
    ({"node": "1", "input": "width", "targets": [{"node": "1", "input": "width"}], "type": "int"}, "not both"),
    ({"targets": [{"node": "1", "input": "height"}, {"node": "1", "input": "height"}], "type": "int"}, "twice"),
    ({"node": "1", "input": "color", "type": "int"}, "already set by param 'color'"),
    ("int", "must be an object"),  # type: ignore[list-item]
]


@pytest.mark.parametrize(("spec", "detail"), BAD_PARAMS)
def test_bad_param_names_manifest_and_param(tmp_path: Path, spec: dict[str, Any], detail: str) -> None:
    folder = write(tmp_path / "w", with_param("broken", spec))
    with pytest.raises(ManifestError) as caught:
        load_workflow(folder)
    assert caught.value.path == str(folder / "manifest.json")
    assert "'broken'" in caught.value.detail and detail in caught.value.detail


@pytest.mark.parametrize("name", ["6::text", ""])
def test_param_names_must_not_look_like_node_keys(tmp_path: Path, name: str) -> None:
    with pytest.raises(ManifestError, match="parameter name must be"):
        load_workflow(write(tmp_path / "w", with_param(name, {"node": "1", "input": "batch_size", "type": "int"})))


@pytest.mark.parametrize(
    ("manifest", "detail"),
    [
        ("{not json", "invalid JSON"),
        ('{"params": {}, "params": {}}', "appears twice"),
        ([], "must be a JSON object"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": True}, "max_attempts"),
        ({"timeout_seconds": -1}, "timeout_seconds"),
        ({"timeout_seconds": "600"}, "timeout_seconds"),
        ({"cache": "yes"}, "cache"),
        ({"description": 1}, "description"),
        ({"params": []}, "params must be an object"),
        ({"tags": []}, "unknown field(s) tags"),
    ],
)
def test_bad_manifest(tmp_path: Path, manifest: Any, detail: str) -> None:
    folder = write(tmp_path / "w", manifest)
    with pytest.raises(ManifestError) as caught:
        load_workflow(folder)
    assert caught.value.path == str(folder / "manifest.json") and detail in caught.value.detail


@pytest.mark.parametrize(
    ("graph", "detail"),
    [
        ("[1, 2", "invalid JSON"),
        ('{"1": {"class_type": "A", "inputs": {}}, "1": {"class_type": "B", "inputs": {}}}', "'1' appears twice"),
        ([], "non-empty object of nodes"),
        ({}, "non-empty object of nodes"),
        ({"nodes": [], "links": []}, "is a workflow in ComfyUI's UI format, not the API format: export the API"),
        ({"1": {"inputs": {}}}, "node '1' has no class_type"),
        ({"1": {"class_type": "A"}}, "node '1' has no inputs"),
        ({"1": {"class_type": "A", "inputs": {}, "_meta": "x"}}, "_meta"),
        ({"1": {"class_type": "A", "inputs": {"x": ["9", 0]}}}, "links to missing node '9'"),
        ({"1": {"class_type": "A", "inputs": {"x": ["1"]}}}, "[node_id, output_index]"),
        ({"1": {"class_type": "A", "inputs": {"x": [1, 0]}}}, "[node_id, output_index]"),
    ],
)
def test_bad_graph_names_workflow_json(tmp_path: Path, graph: Any, detail: str) -> None:
    folder = write(tmp_path / "w", {"params": {}}, graph)
    with pytest.raises(ManifestError) as caught:
        load_workflow(folder)
    assert caught.value.path == str(folder / "workflow.json") and detail in caught.value.detail


def test_missing_workflow_json(tmp_path: Path) -> None:
    folder = write(tmp_path / "w")
    (folder / "workflow.json").unlink()
    with pytest.raises(ManifestError) as caught:
        load_workflow(folder)
    assert caught.value.path == str(folder / "workflow.json") and "missing" in caught.value.detail


def test_folder_name_must_be_url_safe(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="url-safe"):
        load_workflow(write(tmp_path / "has space"))


# --- the registry --------------------------------------------------------------------------------------


def test_registry_load_skips_folders_without_a_graph(tmp_path: Path) -> None:
    write(tmp_path / "b")
    write(tmp_path / "a")
    (tmp_path / "notes").mkdir()
    (tmp_path / "README.md").write_text("not a workflow")
    registry = Registry.load(tmp_path)
    assert [w.id for w in registry.all()] == ["a", "b"]
    assert registry.get("a").id == "a" and len(registry) == 2 and "notes" not in registry


def test_a_folder_without_a_manifest_gets_one_inferred(tmp_path: Path) -> None:
    write(tmp_path / "a")
    folder = tmp_path / "bare"
    folder.mkdir()
    (folder / "workflow.json").write_text(json.dumps(GRAPH))
    registry = Registry.load(tmp_path)
    assert [w.id for w in registry.all()] == ["a", "bare"]
    bare = registry.get("bare")
    assert bare.inferred and not registry.get("a").inferred
    assert "inferred" in bare.description.lower() and bare.manifest["params"].keys() == bare.params.keys()
    # GRAPH's "KSamplerish" node counts as a sampler (its class names one): its cfg and sampler_name.
    assert set(bare.params) == {"cfg", "sampler"} and bare.params["sampler"].default == "euler"
    bound = bind(bare, {"params": {"cfg": 5}}, run_id="r1")
    assert bound.graph["4"]["inputs"]["cfg"] == 5.0 and bound.graph["1"]["inputs"]["width"] == 512


def test_registry_one_broken_workflow_fails_the_load(tmp_path: Path) -> None:
    write(tmp_path / "good")
    write(tmp_path / "bad", with_param("oops", {"node": "7", "input": "x", "type": "int"}))
    with pytest.raises(ManifestError) as caught:
        Registry.load(tmp_path)
    assert caught.value.path == str(tmp_path / "bad" / "manifest.json") and "'oops'" in caught.value.detail


def test_registry_get_unknown_and_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(WorkflowNotFound) as caught:
        Registry.load(tmp_path).get("nope")
    assert caught.value.workflow_id == "nope"
    with pytest.raises(ManifestError, match="does not exist"):
        Registry.load(tmp_path / "missing")


def test_registry_rejects_duplicate_ids(tmp_path: Path) -> None:
    workflow = load_workflow(write(tmp_path / "w"))
    with pytest.raises(ManifestError, match="used twice"):
        Registry([workflow, workflow])
