"""Binding run bodies into graphs: every accepted form, every refusal, prefixes, digests and the seed check."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from dispatcher.binding import (
    RUN_OPTION_KEYS,
    Bound,
    bind,
    bound_digest,
    fixes_every_seed,
    refuse_options,
    unique_prefix,
)
from dispatcher.errors import BadRequest, ParameterError
from dispatcher.workflows import Param, Workflow

SAMPLERS = ("euler", "dpmpp_2m")

# The SD 1.5 graph in ComfyUI's API format, plus a second sampler sharing the seed and a custom save node.
SD_GRAPH: dict[str, Any] = {
    "3": {
        "class_type": "KSampler",
        "inputs": {
            "seed": 0,
            "steps": 20,
            "cfg": 7.0,
            "sampler_name": "euler",
            "scheduler": "normal",
            "denoise": 1.0,
            "model": ["4", 0],
            "positive": ["6", 0],
            "negative": ["7", 0],
            "latent_image": ["5", 0],
        },
    },
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "portraits/face", "images": ["8", 0]}},
    "12": {
        "class_type": "KSampler",
        "inputs": {
            "seed": 0,
            "steps": 20,
            "cfg": 7.0,
            "sampler_name": "euler",
            "scheduler": "normal",
            "denoise": 0.5,
            "model": ["4", 0],
            "positive": ["6", 0],
            "negative": ["7", 0],
            "latent_image": ["3", 0],
        },
    },
    "13": {
        "class_type": "VHS_VideoCombine",
        "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0], "save_output": False},
    },
    "14": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
}
INVERT_GRAPH: dict[str, Any] = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 512, "height": 512, "batch_size": 1, "color": 0}},
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "invert"}},
}


def workflow(graph: dict[str, Any], *params: Param, workflow_id: str = "wf") -> Workflow:
    return Workflow(
        id=workflow_id,
        description="",
        graph=copy.deepcopy(graph),
        params={p.name: p for p in params},
        max_attempts=3,
        timeout_seconds=600,
        cache=False,
        path=Path("/nowhere") / workflow_id,
    )


def param(name: str, kind: str, *targets: str, **fields: Any) -> Param:
    fields.setdefault("required", fields.get("default") is None)
    return Param(
        name=name,
        type=kind,
        targets=tuple(tuple(t.split("::")) for t in targets),  # type: ignore[misc]
        **fields,
    )


SD = workflow(
    SD_GRAPH,
    param("prompt", "string", "6::text"),
    param("negative_prompt", "string", "7::text", default=""),
    param("seed", "int", "3::seed", "12::seed", default=0, min=0, max=2**64 - 1),
    param("steps", "int", "3::steps", default=20, min=1, max=150),
    param("cfg", "float", "3::cfg", default=7.0, min=0, max=30),
    param("sampler", "enum", "3::sampler_name", default="euler", choices=SAMPLERS),
    param("width", "int", "5::width", default=512, min=64, max=2048),
    param("image", "image", "14::image", required=False),
    param("save_video", "bool", "13::save_output", required=False),
)
INVERT = workflow(
    INVERT_GRAPH,
    param("width", "int", "1::width", default=512, min=1, max=4096),
    param("height", "int", "1::height", default=512, min=1, max=4096),
    param("color", "int", "1::color", default=0, min=0, max=16777215),
    workflow_id="invert",
)


def inputs(bound: Bound, node_id: str) -> dict[str, Any]:
    return bound.graph[node_id]["inputs"]  # type: ignore[no-any-return]


# --- form 1: named parameters ------------------------------------------------------------------------


def test_defaults_fill_every_param_not_given() -> None:
    bound = bind(INVERT, {}, run_id="r1")
    assert bound.params == {"width": 512, "height": 512, "color": 0} and bound.overrides == {}
    assert inputs(bound, "1") == {"width": 512, "height": 512, "batch_size": 1, "color": 0}


def test_named_params_are_bound_and_canonical() -> None:
    bound = bind(
        SD,
        {"params": {"prompt": "a cat", "seed": 7.0, "cfg": 5, "sampler": "dpmpp_2m", "save_video": True}},
        run_id="r1",
    )
    assert inputs(bound, "6")["text"] == "a cat" and inputs(bound, "7")["text"] == ""
    assert inputs(bound, "3")["seed"] == 7 and isinstance(inputs(bound, "3")["seed"], int)
    assert inputs(bound, "12")["seed"] == 7  # one parameter, two targets
    assert inputs(bound, "3")["cfg"] == 5.0 and isinstance(inputs(bound, "3")["cfg"], float)
    assert inputs(bound, "3")["sampler_name"] == "dpmpp_2m"
    assert bound.params == {
        "prompt": "a cat",
        "negative_prompt": "",
        "seed": 7,
        "steps": 20,
        "cfg": 5.0,
        "sampler": "dpmpp_2m",
        "width": 512,
        "save_video": True,
    }
    assert "image" not in bound.params and inputs(bound, "14")["image"] == "example.png"


def test_null_asks_for_the_default() -> None:
    assert bind(SD, {"params": {"prompt": "x", "steps": None}}, run_id="r").params["steps"] == 20


def test_flowai_input_is_read_like_params() -> None:
    bound = bind(SD, {"input": {"prompt": "a dog", "6::text": "a dog"}, "params": {"steps": 3}}, run_id="r")
    assert bound.params["prompt"] == "a dog" and bound.params["steps"] == 3


def test_run_options_are_ignored() -> None:
    body = {
        "params": {"prompt": "x"},
        "priority": 5,
        "callback_urls": {"on_result_url": "http://h"},
        "stream": True,
        "cache": False,
        "wait": 3,
        "timeout_seconds": 9,
        "max_attempts": 1,
        "metadata": {"a": 1},
        "webhook": "http://h",
        "workflow_id": "wf",
    }
    assert bind(SD, body, run_id="r").params["prompt"] == "x"


@pytest.mark.parametrize(
    ("field", "detail"),
    [
        ("max_attempts", "unknown field (the workflow's manifest sets it); a run body takes: params (or input), "),
        ("metadata", "unknown field; a run body takes: params (or input), cache, callback_urls, priority, stream, "),
        ("webhook", "unknown field; "),
        ("wait", "unknown field (use the ?wait= query parameter); "),
        ("workflow_id", "unknown field (the workflow is the one named in the URL); "),
    ],
)
def test_the_native_body_refuses_other_products_options(field: str, detail: str) -> None:
    body = {"params": {"width": 8}, "priority": "high", field: 1}
    with pytest.raises(ParameterError) as caught:
        refuse_options(body)
    assert caught.value.param == field and caught.value.detail.startswith(detail)
    refuse_options(body, RUN_OPTION_KEYS)  # what a compatibility route takes


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"params": {"width": 8}, "input": {}, "priority": "low", "stream": False, "cache": True},
        {"callback_urls": {}, "timeout_seconds": 5, "prompt": "x", "target_node": "6", "6": {"inputs": {}}},
        {"colour": 5},  # not an option at all: bind() refuses it, naming it
    ],
)
def test_the_native_body_keeps_its_own_fields(body: dict[str, Any]) -> None:
    refuse_options(body)


@pytest.mark.parametrize(
    ("body", "name", "detail"),
    [
        ({"params": {"widht": 5}}, "widht", "unknown parameter; this workflow takes: width, height, color"),
        ({"params": {"width": "512"}}, "width", "must be an integer"),
        ({"params": {"width": 5.5}}, "width", "must be an integer"),
        ({"params": {"width": True}}, "width", "must be an integer"),
        ({"params": {"width": 0}}, "width", "must be >= 1"),
        ({"params": {"width": 4097}}, "width", "must be <= 4096"),
        ({"params": {"color": -1}}, "color", "must be >= 0"),
        ({"params": []}, "params", "must be an object"),
        ({"input": "x"}, "input", "must be an object"),
        ({"params": {"width": 5}, "input": {"width": 6}}, "width", "both params and input"),
        ({"width": 5}, "width", 'put named parameters under "params"'),
        ({"6::text": "x"}, "6::text", "unknown key"),
    ],
)
def test_invert_refusals_name_the_parameter(body: dict[str, Any], name: str, detail: str) -> None:
    with pytest.raises(ParameterError) as caught:
        bind(INVERT, body, run_id="r")
    assert caught.value.param == name and detail in caught.value.detail


@pytest.mark.parametrize(
    ("params", "name", "detail"),
    [
        ({}, "prompt", "is required"),
        ({"prompt": None}, "prompt", "is required"),
        ({"prompt": 5}, "prompt", "must be a string"),
        ({"prompt": "x", "cfg": "7"}, "cfg", "must be a number"),
        ({"prompt": "x", "cfg": False}, "cfg", "must be a number"),
        ({"prompt": "x", "cfg": float("nan")}, "cfg", "must be a finite number"),
        ({"prompt": "x", "cfg": 10**400}, "cfg", "must be a finite number; this one is too large for a float"),
        ({"prompt": "x", "cfg": 30.5}, "cfg", "must be <= 30"),
        ({"prompt": "x", "sampler": "euler_a"}, "sampler", "must be one of: euler, dpmpp_2m"),
        ({"prompt": "x", "seed": 2**64}, "seed", "must be <= 18446744073709551615"),
        ({"prompt": "x", "save_video": 1}, "save_video", "must be true or false"),
        ({"prompt": "x", "image": ""}, "image", "must be a non-empty string"),
        ({"prompt": "x", "image": 3}, "image", "must be a non-empty string"),
    ],
)
def test_sd_refusals_name_the_parameter(params: dict[str, Any], name: str, detail: str) -> None:
    with pytest.raises(ParameterError) as caught:
        bind(SD, {"params": params}, run_id="r")
    assert caught.value.param == name and detail in caught.value.detail


def test_a_workflow_without_params_says_so() -> None:
    with pytest.raises(ParameterError, match="takes: no parameters"):
        bind(workflow(INVERT_GRAPH), {"params": {"x": 1}}, run_id="r")


# --- form 2: Comflowy node::input keys ---------------------------------------------------------------


def test_comflowy_seed_example() -> None:
    body = {
        "workflow_id": "test_workflow_id",
        "params": {
            "3::sampler_name": "euler",
            "6::text": "beautiful scenery nature glass bottle landscape, , purple galaxy bottle,",
        },
        "callback_urls": {"on_result_url": "test_url", "on_progress_event_url": "test_url"},
    }
    bound = bind(SD, body, run_id="r")
    assert inputs(bound, "6")["text"].startswith("beautiful scenery")
    assert bound.params["prompt"] == inputs(bound, "6")["text"] and bound.params["sampler"] == "euler"
    assert bound.overrides == body["params"]


def test_node_input_on_a_param_target_counts_as_the_param() -> None:
    bound = bind(SD, {"params": {"prompt": "x", "3::seed": 42}}, run_id="r")
    assert bound.params["seed"] == 42 and inputs(bound, "12")["seed"] == 42
    assert bound.overrides == {"3::seed": 42}


def test_node_input_on_an_input_no_param_owns() -> None:
    bound = bind(
        SD, {"params": {"prompt": "x", "5::batch_size": 4.0, "3::scheduler": "karras", "12::denoise": 1}}, run_id="r"
    )
    assert inputs(bound, "5")["batch_size"] == 4 and isinstance(inputs(bound, "5")["batch_size"], int)
    assert inputs(bound, "3")["scheduler"] == "karras" and inputs(bound, "12")["denoise"] == 1.0
    assert bound.overrides == {"5::batch_size": 4, "3::scheduler": "karras", "12::denoise": 1.0}


@pytest.mark.parametrize(
    ("params", "key", "detail"),
    [
        ({"99::text": "x"}, "99::text", "node 99 is not in this workflow"),
        ({"6::txt": "x"}, "6::txt", "node 6 (CLIPTextEncode) has no input 'txt'; it has: text, clip"),
        ({"6::clip": "x"}, "6::clip", "is a link from node 4"),
        ({"::text": "x"}, "::text", "node_id::input_name"),
        ({"6::": "x"}, "6::", "node_id::input_name"),
        ({"3::steps": 0}, "3::steps", "must be >= 1 (parameter 'steps')"),
        ({"3::sampler_name": "nope"}, "3::sampler_name", "must be one of: euler, dpmpp_2m"),
        ({"5::batch_size": "4"}, "5::batch_size", "must be an integer"),
        ({"5::batch_size": 1.5}, "5::batch_size", "must be an integer"),
        ({"3::scheduler": 1}, "3::scheduler", "must be a string"),
        ({"12::denoise": "1"}, "12::denoise", "must be a number"),
        ({"12::denoise": 10**400}, "12::denoise", "must be a finite number; this one is too large for a float"),
        ({"12::denoise": -(10**309)}, "12::denoise", "too large for a float"),
        ({"3::cfg": 10**309}, "3::cfg", "too large for a float (parameter 'cfg')"),
        ({"3::scheduler": ["4", 0]}, "3::scheduler", "must be a string, a number or a boolean"),
        ({"3::scheduler": {"a": 1}}, "3::scheduler", "must be a string, a number or a boolean"),
        ({"3::scheduler": None}, "3::scheduler", "must be a string, a number or a boolean"),
        ({"seed": 1, "3::seed": 2}, "3::seed", "conflicts with the value given for 'seed'"),
        ({"3::seed": 1, "12::seed": 2}, "12::seed", "conflicts with the value given for '3::seed'"),
        ({"9::filename_prefix": "../escape"}, "9::filename_prefix", "relative path inside the output folder"),
        ({"9::filename_prefix": "/abs"}, "9::filename_prefix", "relative path inside the output folder"),
        ({"9::filename_prefix": "C:\\x"}, "9::filename_prefix", "relative path inside the output folder"),
    ],
)
def test_node_input_refusals_name_the_key(params: dict[str, Any], key: str, detail: str) -> None:
    with pytest.raises(ParameterError) as caught:
        bind(SD, {"params": {"prompt": "x", **params}}, run_id="r")
    assert caught.value.param == key and detail in caught.value.detail


def test_the_same_value_twice_is_not_a_conflict() -> None:
    bound = bind(SD, {"params": {"prompt": "x", "seed": 3, "3::seed": 3.0, "12::seed": 3}}, run_id="r")
    assert bound.params["seed"] == 3


# --- form 3: the Flask seed's simple form ------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "node_id"),
    [
        ({"prompt": "a cat"}, "6"),
        ({"prompt": "a cat", "target_node": None}, "6"),
        ({"prompt": "a cat", "target_node": "6"}, "6"),
        ({"prompt": "a cat", "target_node": 6}, "6"),
    ],
)
def test_simple_form_writes_the_text_node(body: dict[str, Any], node_id: str) -> None:
    bound = bind(SD, body, run_id="r")
    assert inputs(bound, node_id)["text"] == "a cat" and bound.params["prompt"] == "a cat"
    assert bound.overrides == {f"{node_id}::text": "a cat"}


def test_simple_form_target_node_may_be_the_negative() -> None:
    bound = bind(SD, {"prompt": "blurry", "target_node": "7", "params": {"prompt": "a cat"}}, run_id="r")
    assert bound.params["negative_prompt"] == "blurry" and inputs(bound, "6")["text"] == "a cat"


@pytest.mark.parametrize(
    ("class_type", "text"),
    [
        ("Text Multiline", "hello"),
        ("TextMultiline|pysssss", "hello"),
        ("ShowText", "hello"),
        ("CLIPTextEncode", None),
    ],
)
def test_simple_form_text_node_kinds(class_type: str, text: str | None) -> None:
    graph = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 1}},
        "58": {"class_type": class_type, "inputs": {"text": text}},
    }
    assert inputs(bind(workflow(graph), {"prompt": "p"}, run_id="r"), "58")["text"] == "p"


def test_simple_form_skips_text_inputs_fed_by_links() -> None:
    graph = {
        "1": {"class_type": "PrimitiveString", "inputs": {"value": "a"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": ["1", 0]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": ""}},
    }
    assert bind(workflow(graph), {"prompt": "p"}, run_id="r").overrides == {"3::text": "p"}
    with pytest.raises(ParameterError, match="Target node 2 is not a text input node"):
        bind(workflow(graph), {"prompt": "p", "target_node": "2"}, run_id="r")


@pytest.mark.parametrize(
    ("wf", "body", "name", "detail"),
    [
        (SD, {"prompt": "x", "target_node": "41"}, "target_node", "Target node 41 is not a text input node"),
        (SD, {"prompt": "x", "target_node": "5"}, "target_node", "Target node 5 is not a text input node"),
        (SD, {"prompt": "x", "target_node": ["6"]}, "target_node", "must be a node id"),
        (SD, {"target_node": "6"}, "target_node", "needs a prompt"),
        (SD, {"prompt": 5}, "prompt", "must be a string"),
        (SD, {"prompt": {"3": {}}}, "prompt", "must be a string"),
        (SD, {"prompt": "x", "params": {"prompt": "y"}}, "6::text", "conflicts with the value given for 'prompt'"),
        (INVERT, {"prompt": "x"}, "prompt", "No suitable text input node found in workflow"),
    ],
)
def test_simple_form_refusals(wf: Workflow, body: dict[str, Any], name: str, detail: str) -> None:
    with pytest.raises(ParameterError) as caught:
        bind(wf, body, run_id="r")
    assert caught.value.param == name and detail in caught.value.detail


# --- form 4: the Flask seed's advanced form ----------------------------------------------------------


def test_advanced_form_seed_example() -> None:
    graph = {str(n): {"class_type": "Text Multiline", "inputs": {"text": ""}} for n in (58, 126, 128)}
    body = {
        "58": {"inputs": {"text": "A young man standing in front of a building..."}},
        "126": {"inputs": {"text": "惊喜的购物狂欢"}},
        "128": {"inputs": {"text": "意外的礼物, 购物的快乐"}},
    }
    bound = bind(workflow(graph), body, run_id="r")
    assert inputs(bound, "126")["text"] == "惊喜的购物狂欢"
    assert bound.overrides == {
        "58::text": body["58"]["inputs"]["text"],
        "126::text": "惊喜的购物狂欢",
        "128::text": "意外的礼物, 购物的快乐",
    }


def test_advanced_form_mixes_with_params_and_applies_manifest_rules() -> None:
    bound = bind(
        SD,
        {
            "6": {"inputs": {"text": "a cat"}},
            "3": {"inputs": {"steps": 4, "scheduler": "karras"}},
            "params": {"width": 640},
        },
        run_id="r",
    )
    assert bound.params["prompt"] == "a cat" and bound.params["steps"] == 4 and bound.params["width"] == 640
    with pytest.raises(ParameterError) as caught:
        bind(SD, {"6": {"inputs": {"text": "a cat"}}, "3": {"inputs": {"steps": 999}}}, run_id="r")
    assert caught.value.param == "3::steps" and "must be <= 150" in caught.value.detail


@pytest.mark.parametrize(
    ("body", "name", "detail"),
    [
        ({"6": {"text": "x"}}, "6", '{"inputs"'),
        ({"6": "x"}, "6", '{"inputs"'),
        ({"6": {"inputs": {"text": "x"}, "class_type": "CLIPTextEncode"}}, "6", '{"inputs"'),
        ({"6": {"inputs": ["x"]}}, "6", '{"inputs"'),
        ({"6": {"inputs": {"clip": "x"}}}, "6::clip", "is a link"),
        ({"6": {"inputs": {"nope": "x"}}}, "6::nope", "has no input 'nope'"),
        ({"41": {"inputs": {"text": "x"}}}, "41", "unknown key"),
    ],
)
def test_advanced_form_refusals(body: dict[str, Any], name: str, detail: str) -> None:
    with pytest.raises(ParameterError) as caught:
        bind(SD, {"params": {"prompt": "x"}, **body}, run_id="r")
    assert caught.value.param == name and detail in caught.value.detail


# --- body shape, copies, prefixes -----------------------------------------------------------------------


def test_body_must_be_an_object() -> None:
    with pytest.raises(BadRequest):
        bind(INVERT, ["x"], run_id="r")  # type: ignore[arg-type]


@pytest.mark.parametrize("run_id", ["", "a/b", "a b", "x" * 65, "../r"])
def test_run_id_must_be_url_safe(run_id: str) -> None:
    with pytest.raises(ValueError):
        bind(INVERT, {}, run_id=run_id)


def test_bind_never_mutates_the_workflow() -> None:
    before = copy.deepcopy(SD.graph)
    bound = bind(SD, {"params": {"prompt": "x", "seed": 5}, "5": {"inputs": {"batch_size": 2}}}, run_id="r")
    assert SD.graph == before and bound.graph is not SD.graph and bound.graph["3"] is not SD.graph["3"]


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("ComfyUI", "ComfyUI_abc"),
        ("portraits/face", "portraits/face_abc"),
        ("a/b/c", "a/b/c_abc"),
        ("win\\dir\\name", "win\\dir\\name_abc"),
        ("face_", "face__abc"),
        ("%date:yyyy-MM-dd%/img", "%date:yyyy-MM-dd%/img_abc"),
        ("dir/", "dir/abc"),
        ("", "abc"),
    ],
)
def test_unique_prefix(prefix: str, expected: str) -> None:
    assert unique_prefix(prefix, "abc") == expected


def test_every_filename_prefix_gets_the_run_id() -> None:
    bound = bind(SD, {"params": {"prompt": "x"}}, run_id="Run-1_z")
    assert inputs(bound, "9")["filename_prefix"] == "portraits/face_Run-1_z"
    assert inputs(bound, "13")["filename_prefix"] == "ComfyUI_Run-1_z"
    overridden = bind(SD, {"params": {"prompt": "x", "9::filename_prefix": "mine/pic"}}, run_id="r2")
    assert inputs(overridden, "9")["filename_prefix"] == "mine/pic_r2"
    assert overridden.overrides == {"9::filename_prefix": "mine/pic"}


def test_a_linked_filename_prefix_is_left_alone() -> None:
    graph = {
        "1": {"class_type": "PrimitiveString", "inputs": {"value": "p"}},
        "2": {"class_type": "SaveAudio", "inputs": {"filename_prefix": ["1", 0]}},
    }
    assert inputs(bind(workflow(graph), {}, run_id="r"), "2")["filename_prefix"] == ["1", 0]


# --- digest and seed check -----------------------------------------------------------------------------


def test_digest_ignores_the_run_id_and_canonicalises_numbers() -> None:
    one = bind(SD, {"params": {"prompt": "x", "cfg": 7}}, run_id="run1")
    two = bind(SD, {"prompt": "x", "params": {"cfg": 7.0}}, run_id="run2")
    assert one.graph != two.graph
    assert bound_digest("sd", one) == bound_digest("sd", two)
    assert len(bound_digest("sd", one)) == 64 and bound_digest("sd", one) == bound_digest("sd", one)


@pytest.mark.parametrize(
    "other",
    [
        {"params": {"prompt": "y"}},
        {"params": {"prompt": "x", "seed": 1}},
        {"params": {"prompt": "x", "5::batch_size": 2}},
    ],
)
def test_digest_changes_with_the_graph(other: dict[str, Any]) -> None:
    base = bind(SD, {"params": {"prompt": "x"}}, run_id="r1")
    assert bound_digest("sd", base) != bound_digest("sd", bind(SD, other, run_id="r1"))


def test_digest_changes_with_the_workflow_id() -> None:
    bound = bind(INVERT, {}, run_id="r")
    assert bound_digest("invert", bound) != bound_digest("invert2", bound)


def test_digest_does_not_touch_the_bound_graph() -> None:
    bound = bind(INVERT, {}, run_id="r")
    bound_digest("invert", bound)
    assert inputs(bound, "3")["filename_prefix"] == "invert_r"


@pytest.mark.parametrize(
    ("seeds", "fixed"),
    [
        ({}, True),
        ({"seed": 5}, True),
        ({"seed": 5, "noise_seed": 0}, True),
        ({"seed": ["9", 0]}, False),
        ({"noise_seed": ["9", 0]}, False),
        ({"seed": 5.0}, False),
        ({"seed": True}, False),
        ({"seed": "5"}, False),
        ({"seed": None}, False),
    ],
)
def test_fixes_every_seed(seeds: dict[str, Any], fixed: bool) -> None:
    graph = {
        "9": {"class_type": "PrimitiveInt", "inputs": {"value": 1}},
        "1": {"class_type": "KSamplerAdvanced", "inputs": {"steps": 1, **seeds}},
        "2": {"class_type": "KSampler", "inputs": {"seed": 1}},
    }
    wf = workflow(graph)
    assert fixes_every_seed(wf, Bound(graph=graph, params={}, overrides={})) is fixed


def test_fixes_every_seed_on_bound_sd() -> None:
    assert fixes_every_seed(SD, bind(SD, {"params": {"prompt": "x", "seed": 9}}, run_id="r"))
