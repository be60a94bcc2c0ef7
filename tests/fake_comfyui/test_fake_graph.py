"""Validation and execution order, as pure functions (no server)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import pytest
from fake_comfy_helpers import transcript

from dispatcher.fake_comfyui.graph import execution_order, validate_prompt
from dispatcher.fake_comfyui.schemas import Catalog, build_schemas, types_match

SCHEMAS = build_schemas(Catalog(input_images=("cat.png",), models={"checkpoints": ("sd15.safetensors",)}))
INT_CONFIG = ["INT", {"default": 512, "min": 1, "max": 16384, "step": 1}]


def empty(width: Any = 8, height: Any = 8, color: Any = 0) -> dict[str, Any]:
    return {"class_type": "EmptyImage", "inputs": {"width": width, "height": height, "batch_size": 1, "color": color}}


def save(source: str = "1", prefix: str = "x") -> dict[str, Any]:
    return {"class_type": "SaveImage", "inputs": {"images": [source, 0], "filename_prefix": prefix}}


def validate(prompt: dict[str, Any], files: tuple[str, ...] = ("cat.png",)) -> Any:
    def load_image(inputs: Mapping[str, Any]) -> bool | str:
        return True if inputs["image"] in files else f"Invalid image file: {inputs['image']}"

    return validate_prompt(prompt, SCHEMAS, validators={"LoadImage": load_image})


def failed(node_errors: dict[str, Any], details: str) -> dict[str, Any]:
    return {
        "error": {
            "type": "prompt_outputs_failed_validation",
            "message": "Prompt outputs failed validation",
            "details": details,
            "extra_info": {},
        },
        "node_errors": node_errors,
    }


def body(result: Any) -> dict[str, Any]:
    return {"error": result.error, "node_errors": result.node_errors}


def test_valid_prompt_lists_its_outputs_and_converts_values() -> None:
    prompt = {"1": empty(width="64", height=32.0), "2": save()}
    result = validate(prompt)
    assert (result.ok, result.error, result.outputs, result.node_errors) == (True, None, ["2"], {})
    assert prompt["1"]["inputs"]["width"] == 64 and prompt["1"]["inputs"]["height"] == 32  # converted in place


@pytest.mark.parametrize(
    ("name", "expected"),
    [("validation_error", "validation_error"), ("validation_error_no_output", "validation_error_no_output")],
)
def test_recorded_validation_errors(name: str, expected: str) -> None:
    rec = transcript(name)
    assert body(validate(copy.deepcopy(rec["workflow"]))) == transcript(expected)["post_prompt"]["body"]


def test_missing_class_type() -> None:
    result = validate({"7": {"inputs": {}}})
    assert result.error == {
        "type": "invalid_prompt",
        "message": "Cannot execute because a node is missing the class_type property.",
        "details": "Node ID '#7'",
        "extra_info": {},
    }


def test_wrong_type_for_an_int() -> None:
    error = {
        "type": "invalid_input_type",
        "message": "Failed to convert an input value to a INT value",
        "details": "width, abc, invalid literal for int() with base 10: 'abc'",
        "extra_info": {
            "input_name": "width",
            "input_config": INT_CONFIG,
            "received_value": "abc",
            "exception_message": "invalid literal for int() with base 10: 'abc'",
        },
    }
    node_errors = {"1": {"errors": [error], "dependent_outputs": ["2"], "class_type": "EmptyImage"}}
    assert body(validate({"1": empty(width="abc"), "2": save()})) == failed(node_errors, "")


@pytest.mark.parametrize(
    ("value", "kind", "message"),
    [
        (0, "value_smaller_than_min", "Value 0 smaller than min of 1"),
        (20000, "value_bigger_than_max", "Value 20000 bigger than max of 16384"),
    ],
)
def test_out_of_range(value: int, kind: str, message: str) -> None:
    error = {
        "type": kind,
        "message": message,
        "details": "width",
        "extra_info": {"input_name": "width", "input_config": INT_CONFIG, "received_value": value},
    }
    node_errors = {"1": {"errors": [error], "dependent_outputs": ["2"], "class_type": "EmptyImage"}}
    assert body(validate({"1": empty(width=value), "2": save()})) == failed(node_errors, "")


def test_missing_required_input_on_the_output_itself() -> None:
    error = {
        "type": "required_input_missing",
        "message": "Required input is missing",
        "details": "filename_prefix",
        "extra_info": {"input_name": "filename_prefix"},
    }
    node_errors = {"2": {"errors": [error], "dependent_outputs": ["2"], "class_type": "SaveImage"}}
    prompt = {"1": empty(), "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}}}
    assert body(validate(prompt)) == failed(node_errors, "Required input is missing: filename_prefix")


def test_link_to_a_missing_node() -> None:
    result = validate({"2": save(source="99")})
    assert result.error["type"] == "prompt_outputs_failed_validation"
    assert result.error["details"] == "Exception when validating node: '99'"
    (reason,) = result.node_errors["2"]["errors"]
    assert reason["type"] == "exception_during_validation"
    assert reason["extra_info"]["exception_type"] == "KeyError"
    assert all(isinstance(line, str) for line in reason["extra_info"]["traceback"])


def test_link_to_a_missing_node_further_up() -> None:
    prompt = {"2": {"class_type": "ImageInvert", "inputs": {"image": ["99", 0]}}, "3": save(source="2")}
    result = validate(prompt)
    (reason,) = result.node_errors["2"]["errors"]
    assert reason["type"] == "exception_during_inner_validation"
    assert reason["details"] == "'99'" and reason["extra_info"]["linked_node"] == ["2", 0]
    assert result.node_errors["2"]["dependent_outputs"] == ["3"]


def test_type_mismatch_between_linked_nodes() -> None:
    prompt = {"1": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 8, "height": 8}}, "2": save()}
    (reason,) = validate(prompt).node_errors["2"]["errors"]
    assert reason["type"] == "return_type_mismatch"
    assert reason["details"] == "images, received_type(MASK) mismatch input_type(IMAGE)"


def test_bad_combo_value_and_long_lists_are_summarised() -> None:
    prompt = {
        "1": {"class_type": "ImageScale", "inputs": {"image": ["2", 0], "upscale_method": "magic", "width": 8,
                                                       "height": 8, "crop": "disabled"}},
        "2": empty(),
        "3": save(),
    }  # fmt: skip
    (reason,) = validate(prompt).node_errors["1"]["errors"]
    assert (
        reason["details"]
        == "upscale_method: 'magic' not in ['nearest-exact', 'bilinear', 'area', 'bicubic', 'lanczos']"
    )
    prompt = {
        "1": {"class_type": "KSampler", "inputs": {"sampler_name": "nope"}},
        "2": {"class_type": "VAEDecode", "inputs": {"samples": ["1", 0], "vae": ["4", 2]}},
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15.safetensors"}},
        "3": save(source="2"),
    }
    reasons = {r["type"]: r for r in validate(prompt).node_errors["1"]["errors"]}
    assert reasons["value_not_in_list"]["details"].endswith("(list of length 42)")
    assert reasons["value_not_in_list"]["extra_info"]["input_config"] is None


def test_load_image_of_a_missing_file_fails_custom_validation() -> None:
    prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": "nope.png"}}, "2": save()}
    (reason,) = validate(prompt).node_errors["1"]["errors"]
    assert reason == {
        "type": "custom_validation_failed",
        "message": "Custom validation failed for node",
        "details": "image - Invalid image file: nope.png",
        "extra_info": {"input_name": "image"},
    }
    assert validate({"1": {"class_type": "LoadImage", "inputs": {"image": "cat.png"}}, "2": save()}).ok


def test_only_the_valid_outputs_run_when_some_fail() -> None:
    result = validate({"1": empty(), "2": save(), "3": save(source="4"), "4": empty(width=-1)})
    assert result.ok and result.outputs == ["2"]
    assert result.node_errors["4"]["dependent_outputs"] == ["3"]


def test_a_cycle_fails_validation() -> None:
    prompt = {
        "1": {"class_type": "ImageInvert", "inputs": {"image": ["2", 0]}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": save(source="2"),
    }
    # ComfyUI recurses until RecursionError; the frames unwinding overwrite the reason: nothing is blamed.
    assert body(validate(prompt)) == failed({}, "")


def test_partial_execution_targets() -> None:
    result = validate_prompt({"1": empty(), "2": save(), "3": save()}, SCHEMAS, partial_targets=["3"])
    assert result.outputs == ["3"]


@pytest.mark.parametrize(
    ("prompt", "outputs", "order"),
    [
        (transcript("success_invert")["workflow"], ["3", "4"], ["1", "4", "2", "3"]),
        (transcript("progress_sleep")["workflow"], ["3"], ["1", "2", "3"]),
        (transcript("slow_interrupted")["workflow"], ["3"], ["1", "2", "3"]),
        (
            # The SD 1.5 graph: loaders, encoders, sampler, decode, save (VAE decode is picked as soon as ready).
            {
                "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15.safetensors"}},
                "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a", "clip": ["4", 1]}},
                "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "b", "clip": ["4", 1]}},
                "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
                "3": {"class_type": "KSampler", "inputs": {"model": ["4", 0], "positive": ["6", 0],
                                                            "negative": ["7", 0], "latent_image": ["5", 0]}},
                "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
                "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "sd"}},
            },
            ["9"],
            ["4", "5", "7", "6", "3", "8", "9"],
        ),
    ],
)  # fmt: skip
def test_execution_order(prompt: dict[str, Any], outputs: list[str], order: list[str]) -> None:
    assert execution_order(prompt, SCHEMAS, outputs) == order


@pytest.mark.parametrize(
    ("received", "expected", "ok"),
    [("IMAGE", "IMAGE", True), ("*", "IMAGE", True), ("IMAGE", "*", True), ("MASK", "IMAGE", False),
     ("IMAGE,MASK", "MASK", True), ("LATENT", ["a", "b"], False)],
)  # fmt: skip
def test_types_match(received: str, expected: Any, ok: bool) -> None:
    assert types_match(received, expected) is ok
