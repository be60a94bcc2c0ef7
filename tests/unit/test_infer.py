"""Parameter inference (dispatcher.workflows.infer): what a graph without a manifest takes, and under which names.

Pure: graphs in, manifests out, each built with build_workflow as a published or bundled one would be.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from dispatcher.binding import bind
from dispatcher.errors import ParameterError
from dispatcher.workflows import build_workflow, load_workflow
from dispatcher.workflows.comfy_nodes import SAMPLERS, SCHEDULERS
from dispatcher.workflows.infer import infer_manifest, render_manifest, render_summary

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "workflows"
DEFAULT: dict[str, Any] = json.loads((FIXTURES / "default_graph.api.json").read_text())
DEFS: dict[str, Any] = json.loads((FIXTURES / "object_info.json").read_text())


def n(class_type: str, **inputs: Any) -> dict[str, Any]:
    return {"class_type": class_type, "inputs": inputs}


def sampler(positive: str = "6", negative: str = "7", latent: str = "5", **values: Any) -> dict[str, Any]:
    inputs = {"seed": 1, "steps": 20, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}
    inputs.update(values)
    return n("KSampler", **inputs, model=["4", 0], positive=[positive, 0], negative=[negative, 0],
             latent_image=[latent, 0])  # fmt: skip


def default() -> dict[str, Any]:
    return copy.deepcopy(DEFAULT)


def targets(manifest: dict[str, Any]) -> dict[str, list[str]]:
    """Each parameter's ``node::input`` targets."""
    found = {}
    for name, spec in manifest["params"].items():
        listed = spec.get("targets") or [{"node": spec["node"], "input": spec["input"]}]
        found[name] = [f"{t['node']}::{t['input']}" for t in listed]
    return found


def inferred(graph: dict[str, Any], defs: dict[str, Any] | None = None) -> dict[str, Any]:
    """The inferred manifest, checked to build as a publication would."""
    manifest = infer_manifest(graph, defs)
    workflow = build_workflow("w", graph, manifest, graph_where="graph", manifest_where="manifest")
    assert set(workflow.params) == set(manifest["params"])
    assert all("::" not in name for name in manifest["params"])
    return manifest


# --- ComfyUI's default graph -------------------------------------------------------------------------------------


def test_the_default_graph_gets_the_parameters_a_client_expects() -> None:
    manifest = inferred(default())
    assert "inferred" in manifest["description"].lower()
    assert targets(manifest) == {
        "prompt": ["6::text"],
        "negative_prompt": ["7::text"],
        "seed": ["3::seed"],
        "steps": ["3::steps"],
        "cfg": ["3::cfg"],
        "sampler": ["3::sampler_name"],
        "scheduler": ["3::scheduler"],
        "denoise": ["3::denoise"],
        "width": ["5::width"],
        "height": ["5::height"],
        "batch_size": ["5::batch_size"],
        "checkpoint": ["4::ckpt_name"],
    }
    params = manifest["params"]
    assert params["seed"] == {
        "node": "3",
        "input": "seed",
        "type": "int",
        "required": False,
        "default": 156680208700286,
        "min": 0,
        "max": 2**64 - 1,
        "description": "noise seed (KSampler 3: seed)",
    }
    assert params["prompt"]["default"].startswith("beautiful scenery") and not params["prompt"]["required"]
    assert params["cfg"]["type"] == "float" and params["cfg"]["default"] == 8.0
    assert params["sampler"]["choices"] == list(SAMPLERS) and params["scheduler"]["choices"] == list(SCHEDULERS)
    assert params["checkpoint"]["type"] == "string"


def test_the_default_graph_dropped_in_a_folder_runs_with_a_prompt_and_a_seed(tmp_path: Path) -> None:
    folder = tmp_path / "default"
    folder.mkdir()
    (folder / "workflow.json").write_text(json.dumps(DEFAULT))
    workflow = load_workflow(folder)
    assert workflow.inferred and set(workflow.params) >= {"prompt", "seed"}
    bound = bind(workflow, {"params": {"prompt": "a lighthouse", "seed": 3}}, run_id="r1")
    assert bound.graph["6"]["inputs"]["text"] == "a lighthouse"  # the CLIPTextEncode feeding positive
    assert bound.graph["3"]["inputs"]["seed"] == 3  # the KSampler
    assert bound.graph["7"]["inputs"]["text"] == "text, watermark"  # the negative keeps its text
    assert bound.graph["3"]["inputs"]["steps"] == 20 and bound.graph["9"]["inputs"]["filename_prefix"] == "ComfyUI_r1"
    with pytest.raises(ParameterError, match="seed: must be >= 0"):
        bind(workflow, {"params": {"seed": -1}}, run_id="r2")


def test_node_definitions_give_types_ranges_and_choices() -> None:
    manifest = inferred(default(), DEFS)
    params = manifest["params"]
    assert params["steps"]["max"] == 10000 and params["width"]["min"] == 16 and params["width"]["max"] == 16384
    assert params["scheduler"]["choices"] == DEFS["KSampler"]["input"]["required"]["scheduler"][0]
    defs = copy.deepcopy(DEFS)
    defs["KSampler"]["input"]["required"]["scheduler"][0] = ["normal", "mine"]
    defs["KSampler"]["input"]["required"]["steps"][1].update(min=2, max=50)
    params = inferred(default(), defs)["params"]
    assert params["scheduler"]["choices"] == ["normal", "mine"]
    assert (params["steps"]["min"], params["steps"]["max"]) == (2, 50)


@pytest.mark.parametrize(
    ("change", "name", "expected"),
    [
        ({"sampler_name": "brand_new"}, "sampler", {"type": "string", "default": "brand_new"}),
        ({"steps": 20000}, "steps", {"type": "int", "default": 20000}),
        ({"cfg": "high"}, "cfg", None),
    ],
    ids=["unknown choice", "outside range", "wrong type"],
)
def test_a_value_that_does_not_fit_what_is_known(change: dict[str, Any], name: str, expected: Any) -> None:
    graph = default()
    graph["3"]["inputs"].update(change)
    params = inferred(graph)["params"]
    if expected is None:
        assert name not in params
    else:
        assert {k: params[name][k] for k in expected} == expected
        assert "choices" not in params[name] and "min" not in params[name] and "max" not in params[name]


# --- prompts, followed back to their text encoders --------------------------------------------------------------


def test_sdxl_text_encoder_sets_both_its_texts() -> None:
    graph = default()
    graph["6"] = n("CLIPTextEncodeSDXL", width=1024, height=1024, crop_w=0, crop_h=0, target_width=1024,
                   target_height=1024, text_g="a cat", clip=["4", 1], text_l="a cat")  # fmt: skip
    assert targets(inferred(graph))["prompt"] == ["6::text_g", "6::text_l"]
    assert targets(inferred(graph, DEFS | {"CLIPTextEncodeSDXL": sdxl_definition()}))["prompt"] == [
        "6::text_g",
        "6::text_l",
    ]


def sdxl_definition() -> dict[str, Any]:
    size = ["INT", {"default": 1024, "min": 0, "max": 16384}]
    return {"input": {"required": {
        "clip": ["CLIP"], "width": size, "height": size, "crop_w": size, "crop_h": size, "target_width": size,
        "target_height": size, "text_g": ["STRING", {"multiline": True, "dynamicPrompts": True}], "clip2": ["CLIP"],
        "text_l": ["STRING", {"multiline": True, "dynamicPrompts": True}],
    }}, "output": ["CONDITIONING"]}  # fmt: skip


def test_prompts_are_followed_through_conditioning_nodes() -> None:
    graph = default()
    graph["20"] = n("ControlNetLoader", control_net_name="canny.safetensors")
    graph["21"] = n("LoadImage", image="edges.png")
    graph["22"] = n("ControlNetApplyAdvanced", positive=["23", 0], negative=["7", 0], control_net=["20", 0],
                    image=["21", 0], strength=1.0, start_percent=0.0, end_percent=1.0)  # fmt: skip
    graph["23"] = n("FluxGuidance", conditioning=["6", 0], guidance=3.5)
    graph["3"]["inputs"].update(positive=["22", 0], negative=["22", 1])
    found = targets(inferred(graph))
    assert found["prompt"] == ["6::text"] and found["negative_prompt"] == ["7::text"]
    assert found["controlnet"] == ["20::control_net_name"] and found["image"] == ["21::image"]


def test_two_texts_combined_into_one_positive_are_both_named_by_node() -> None:
    graph = default()
    graph["10"] = n("CLIPTextEncode", text="a hat", clip=["4", 1])
    graph["11"] = n("ConditioningCombine", conditioning_1=["6", 0], conditioning_2=["10", 0])
    graph["3"]["inputs"]["positive"] = ["11", 0]
    for defs in (None, DEFS | {"ConditioningCombine": combine_definition()}):
        found = targets(inferred(graph, defs))
        assert "prompt" not in found and found["6.prompt"] == ["6::text"] and found["10.prompt"] == ["10::text"]


def combine_definition() -> dict[str, Any]:
    return {"input": {"required": {"conditioning_1": ["CONDITIONING"], "conditioning_2": ["CONDITIONING"]}}}


def test_inpaint_model_conditioning_passes_each_prompt_to_its_side() -> None:
    graph = default()
    graph["12"] = n("LoadImage", image="photo.png")
    graph["13"] = n("InpaintModelConditioning", positive=["6", 0], negative=["7", 0], vae=["4", 2],
                    pixels=["12", 0], mask=["12", 1], noise_mask=True)  # fmt: skip
    graph["3"]["inputs"].update(positive=["13", 0], negative=["13", 1], latent_image=["13", 2])
    found = targets(inferred(graph))
    assert found["prompt"] == ["6::text"] and found["negative_prompt"] == ["7::text"]


def test_a_negative_made_by_zeroing_the_positive_is_no_prompt() -> None:
    graph = default()
    graph["7"] = n("ConditioningZeroOut", conditioning=["6", 0])
    found = targets(inferred(graph))
    assert found["prompt"] == ["6::text"] and "negative_prompt" not in found
    assert "feeds a negative" not in inferred(graph)["params"]["prompt"]["description"]


def test_one_encoder_feeding_both_sides_is_the_prompt() -> None:
    graph = default()
    graph["3"]["inputs"]["negative"] = ["6", 0]
    del graph["7"]
    params = inferred(graph)["params"]
    assert params["prompt"]["node"] == "6" and "feeds a negative input too" in params["prompt"]["description"]


def test_a_text_from_a_primitive_is_written_there_and_from_another_node_is_no_parameter() -> None:
    graph = default()
    graph["30"] = n("PrimitiveStringMultiline", value="a dog")
    graph["6"]["inputs"]["text"] = ["30", 0]
    graph["31"] = n("StringConcatenate", string_a="x", string_b="y", delimiter="")
    graph["7"]["inputs"]["text"] = ["31", 0]
    prompt = inferred(graph)["params"]["prompt"]
    assert (prompt["node"], prompt["input"], prompt["default"]) == ("30", "value", "a dog")
    params = inferred(graph)["params"]
    assert "negative_prompt" not in params


# --- sampling, latents, loaders, images ----------------------------------------------------------------------------


def test_two_samplers_are_named_by_node_never_guessed() -> None:
    graph = default()
    graph["10"] = n("KSamplerAdvanced", add_noise="disable", noise_seed=5, steps=30, cfg=6.5, sampler_name="euler",
                    scheduler="karras", start_at_step=20, end_at_step=10000, return_with_leftover_noise="disable",
                    model=["4", 0], positive=["6", 0], negative=["7", 0], latent_image=["3", 0])  # fmt: skip
    graph["8"]["inputs"]["samples"] = ["10", 0]
    found = targets(inferred(graph))
    assert found["3.steps"] == ["3::steps"] and found["10.steps"] == ["10::steps"]
    # 10 adds no noise, so its seed changes nothing: not a parameter, and the seed is the one sampler's that has it
    assert found["seed"] == ["3::seed"] and "10.seed" not in found
    assert found["denoise"] == ["3::denoise"]  # only one sampler has it
    assert found["prompt"] == ["6::text"]  # both samplers read the same encoder
    assert not {"steps", "cfg", "sampler", "scheduler"} & set(found)


def test_one_primitive_seed_feeding_two_samplers_is_one_parameter() -> None:
    graph = default()
    graph["40"] = n("PrimitiveInt", value=11)
    graph["10"] = sampler(latent="3", seed=["40", 0])
    graph["3"]["inputs"]["seed"] = ["40", 0]
    found = targets(inferred(graph))
    assert found["seed"] == ["40::value"]


def test_custom_sampling_nodes() -> None:
    graph = default()
    del graph["3"]
    graph["20"] = n("RandomNoise", noise_seed=9)
    graph["21"] = n("KSamplerSelect", sampler_name="dpmpp_2m")
    graph["22"] = n("BasicScheduler", scheduler="karras", steps=12, denoise=0.8, model=["4", 0])
    graph["23"] = n("CFGGuider", model=["4", 0], positive=["6", 0], negative=["7", 0], cfg=5.0)
    graph["24"] = n("SamplerCustomAdvanced", noise=["20", 0], guider=["23", 0], sampler=["21", 0], sigmas=["22", 0],
                    latent_image=["5", 0])  # fmt: skip
    graph["8"]["inputs"]["samples"] = ["24", 0]
    found = targets(inferred(graph))
    assert {k: found[k] for k in ("seed", "sampler", "scheduler", "steps", "denoise", "cfg", "prompt")} == {
        "seed": ["20::noise_seed"],
        "sampler": ["21::sampler_name"],
        "scheduler": ["22::scheduler"],
        "steps": ["22::steps"],
        "denoise": ["22::denoise"],
        "cfg": ["23::cfg"],
        "prompt": ["6::text"],
    }


def test_loaders_are_named_by_their_model_folder() -> None:
    graph = default()
    graph["50"] = n("LoraLoader", lora_name="detail.safetensors", strength_model=1.0, strength_clip=1.0,
                    model=["4", 0], clip=["4", 1])  # fmt: skip
    graph["51"] = n("VAELoader", vae_name="sdxl_vae.safetensors")
    graph["52"] = n("DualCLIPLoader", clip_name1="clip_l.safetensors", clip_name2="t5xxl.safetensors", type="flux")
    graph["53"] = n("UpscaleModelLoader", model_name="4x.pth")
    found = targets(inferred(graph))
    assert found["lora"] == ["50::lora_name"] and found["vae"] == ["51::vae_name"]
    assert found["text_encoder_1"] == ["52::clip_name1"] and found["text_encoder_2"] == ["52::clip_name2"]
    assert found["upscale_model"] == ["53::model_name"] and found["checkpoint"] == ["4::ckpt_name"]


def test_images_are_required_and_several_are_named_by_node() -> None:
    graph = {
        "10": n("LoadImage", image="a.png"),
        "11": n("LoadImage", image="b.png"),
        "12": n("LoadImageMask", image="m.png", channel="alpha"),
        "13": n("ImageBatch", image1=["10", 0], image2=["11", 0]),
        "14": n("SaveImage", images=["13", 0], filename_prefix="x"),
    }
    params = inferred(graph)["params"]
    assert set(params) == {"10.image", "11.image", "mask"}
    assert params["10.image"] == {
        "node": "10",
        "input": "image",
        "type": "image",
        "required": True,
        "description": "input image (LoadImage 10): an http(s) URL, base64 data (raw or a data: URI) or upload:<id> "
        "from POST /v1/uploads",
    }


def test_a_graph_with_nothing_to_infer_has_no_parameters() -> None:
    graph = {"1": n("EmptyImage", width=8, height=8, batch_size=1, color=0),
             "2": n("SaveImage", images=["1", 0], filename_prefix="x")}  # fmt: skip
    assert inferred(graph)["params"] == {}


# --- the bundled graphs and rendering ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("folder", "expected"),
    [
        ("txt2img", {"prompt": ["6::text"], "seed": ["3::seed"], "checkpoint": ["4::ckpt_name"]}),
        ("sdxl-txt2img", {"width": ["5::width"], "4.checkpoint": ["4::ckpt_name"], "12.checkpoint": ["12::ckpt_name"]}),
        ("sd15-inpaint", {"prompt": ["3::text"], "negative_prompt": ["5::text"], "image": ["1::image"]}),
    ],
)
def test_bundled_graphs(folder: str, expected: dict[str, list[str]]) -> None:
    graph = json.loads((ROOT / "workflows" / folder / "workflow.json").read_text())
    found = targets(inferred(graph))
    assert {k: found[k] for k in expected} == expected


def test_the_sdxl_graph_sets_the_prompts_and_steps_of_base_and_refiner() -> None:
    # Whatever the names, a run can reach both passes' texts, both step counts and the base's seed.
    graph = json.loads((ROOT / "workflows" / "sdxl-txt2img" / "workflow.json").read_text())
    found = {target for listed in targets(inferred(graph)).values() for target in listed}
    assert {"6::text", "7::text", "15::text", "16::text", "10::noise_seed", "10::steps", "11::steps"} <= found


def test_render() -> None:
    manifest = infer_manifest(default())
    assert json.loads(render_manifest(manifest)) == manifest
    lines = render_summary(manifest).splitlines()
    assert lines[0].startswith('prompt\tstring\tdefault "beautiful') and lines[0].endswith("\t6::text")
    assert "seed\tint\tdefault 156680208700286\t3::seed" in lines and len(lines) == 12
    image = {"node": "1", "input": "image", "type": "image", "required": True}
    assert render_summary({"params": {"image": image}}) == "image\timage\trequired\t1::image\n"


@pytest.mark.parametrize(
    "path",
    [
        ROOT / "workflows" / "sdxl-txt2img" / "workflow.json",
        ROOT / "workflows" / "sd15-inpaint" / "workflow.json",
        FIXTURES / "default_graph.api.json",
    ],  # fmt: skip
    ids=["sdxl-txt2img", "sd15-inpaint", "default"],
)
def test_graphs_written_here_fit_comfyui_node_definitions(path: Path) -> None:
    """Every node has exactly its class's inputs, and every choice other than a file is one ComfyUI offers."""
    for node_id, node in json.loads(path.read_text()).items():
        definition = DEFS[node["class_type"]]["input"]
        required, optional = definition["required"], definition.get("optional", {})
        assert set(required) <= set(node["inputs"]) <= set(required) | set(optional), node_id
        for name, value in node["inputs"].items():
            kind = {**required, **optional}[name][0]
            if isinstance(kind, list) and name not in ("ckpt_name", "image"):  # files differ on every machine
                assert value in kind, (node_id, name)


def test_a_definition_type_the_graph_value_does_not_have_gives_no_parameter() -> None:
    defs = copy.deepcopy(DEFS)
    defs["KSampler"]["input"]["required"]["cfg"] = ["INT", {"default": 8, "min": 0, "max": 100}]
    graph = default()
    graph["3"]["inputs"]["cfg"] = 7.5  # an INT parameter would be refused over a float value
    assert "cfg" not in inferred(graph, defs)["params"]


# --- inputs that once broke inference -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "odd_id", ["²", "9" * 5000, "٣", "sampler"], ids=["superscript", "5,000 digits", "arabic-indic", "a name"]
)
def test_node_ids_int_refuses_are_named_after_the_integers(odd_id: str) -> None:
    graph = default()
    graph[odd_id] = sampler(seed=9)
    graph["10"] = sampler(latent=odd_id, seed=10)
    graph["8"]["inputs"]["samples"] = ["10", 0]
    found = targets(inferred(graph))
    assert found["3.seed"] == ["3::seed"] and found[f"{odd_id}.seed"] == [f"{odd_id}::seed"]
    seeds = [name for name in found if name.endswith(".seed")]
    assert seeds == ["3.seed", "10.seed", f"{odd_id}.seed"]  # integers first, ascending, as ComfyUI lists them


@pytest.mark.parametrize("defs", [None, DEFS], ids=["known nodes", "definitions"])
def test_one_primitive_feeding_both_texts_of_an_encoder_is_one_target(defs: dict[str, Any] | None) -> None:
    graph = default()
    graph["20"] = n("PrimitiveStringMultiline", value="a cat")
    graph["6"] = n("CLIPTextEncodeSDXL", width=1024, height=1024, crop_w=0, crop_h=0, target_width=1024,
                   target_height=1024, text_g=["20", 0], clip=["4", 1], text_l=["20", 0])  # fmt: skip
    if defs is not None:
        defs = defs | {"CLIPTextEncodeSDXL": sdxl_definition()}
    prompt = inferred(graph, defs)["params"]["prompt"]
    assert (prompt["node"], prompt["input"], prompt["default"]) == ("20", "value", "a cat")


@pytest.mark.parametrize(
    ("name", "bounds", "expected"),
    [
        ("cfg", {"min": float("-inf"), "max": float("inf")}, (0.0, 100.0)),
        ("cfg", {"min": float("nan"), "max": float("nan")}, (0.0, 100.0)),
        ("cfg", {"min": 1.5, "max": float("inf")}, (1.5, 100.0)),
        ("cfg", {"max": 10**400}, (0.0, 100.0)),
        ("steps", {"min": -(10**400), "max": 10**400}, (1, 10000)),
    ],
    ids=["infinite", "nan", "one finite", "beyond floats", "int beyond floats"],
)  # fmt: skip
def test_bounds_a_manifest_cannot_hold_are_left_out(
    name: str, bounds: dict[str, Any], expected: tuple[Any, Any]
) -> None:
    """ComfyUI writes ``Infinity`` for an unbounded input; a manifest takes finite bounds only, min <= max."""
    defs = copy.deepcopy(DEFS)
    defs["KSampler"]["input"]["required"][name][1].update(bounds)
    param = inferred(default(), defs)["params"][name]
    assert (param.get("min"), param.get("max")) == expected
