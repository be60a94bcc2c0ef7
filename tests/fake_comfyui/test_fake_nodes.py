"""Simulated nodes end to end: real PNG files whose colours and sizes follow the graph."""

from __future__ import annotations

import io
import json
import os
import struct
from typing import Any

import pytest
import websocket
from fake_comfy_helpers import (
    Comfy,
    empty,
    invert_graph,
    pixels,
    png_bytes,
    saved,
    transcript,
    upload,
)
from PIL import Image as PILImage

INVERT = transcript("success_invert")["workflow"]


def test_invert_workflow_yields_inverted_png_pixels(comfy: Comfy) -> None:
    prompt_id, frames = comfy.run(INVERT)
    start, success = (next(f for f in frames if f["type"] == kind) for kind in ("execution_start", "execution_success"))
    assert success["data"]["timestamp"] - start["data"]["timestamp"] < 100  # no hidden sleeps
    for image in saved(comfy, prompt_id):
        decoded = pixels(comfy, image)
        assert decoded.size == (64, 64) and decoded.getcolors() == [(64 * 64, (0, 255, 255))]
    for preview in saved(comfy, prompt_id, node="4"):
        assert preview["type"] == "temp"
        assert pixels(comfy, preview).getcolors() == [(64 * 64, (255, 0, 0))]


def test_prefix_with_subfolders_and_continuing_counter(comfy: Comfy) -> None:
    os.makedirs(os.path.join(comfy.dirs.output, "a"))
    open(os.path.join(comfy.dirs.output, "a", "b_00041_.png"), "wb").close()
    prompt_id, _ = comfy.run(invert_graph(empty(batch=2), prefix="a/b"))
    images = saved(comfy, prompt_id)
    assert images == [
        {"filename": "b_00042_.png", "subfolder": "a", "type": "output"},
        {"filename": "b_00043_.png", "subfolder": "a", "type": "output"},
    ]
    assert os.path.isfile(os.path.join(comfy.dirs.output, "a", "b_00043_.png"))
    assert pixels(comfy, images[0]).size == (8, 8)
    prompt_id, _ = comfy.run(invert_graph(empty(), prefix="x/y/z"))
    assert saved(comfy, prompt_id) == [{"filename": "z_00001_.png", "subfolder": "x/y", "type": "output"}]


def test_upload_then_load_image(comfy: Comfy) -> None:
    first = png_bytes((40, 30), (10, 20, 30))
    assert upload(comfy, "in.png", first) == {"name": "in.png", "subfolder": "", "type": "input"}
    assert upload(comfy, "in.png", first)["name"] == "in.png"  # same bytes: reused, not duplicated
    assert upload(comfy, "in.png", png_bytes((2, 2), (0, 0, 0)))["name"] == "in (1).png"
    assert upload(comfy, "in.png", png_bytes((2, 2), (9, 9, 9)), overwrite="true")["name"] == "in.png"
    upload(comfy, "in.png", first, overwrite="1")
    assert upload(comfy, "deep.png", first, subfolder="sub") == {"name": "deep.png", "subfolder": "sub",
                                                                  "type": "input"}  # fmt: skip
    assert "in.png" in comfy.get("/object_info/LoadImage").json()["LoadImage"]["input"]["required"]["image"][0]

    for name in ("in.png", "sub/deep.png"):
        load = {"class_type": "LoadImage", "inputs": {"image": name}}
        prompt_id, frames = comfy.run(invert_graph(load))
        assert frames[-3]["type"] == "execution_success"
        (image,) = saved(comfy, prompt_id)
        assert pixels(comfy, image).getcolors() == [(40 * 30, (245, 235, 225))]


def test_load_image_of_missing_file_is_rejected(comfy: Comfy) -> None:
    reply = comfy.submit(invert_graph({"class_type": "LoadImage", "inputs": {"image": "nope.png"}}), "c")
    assert reply.status_code == 400
    assert reply.json()["node_errors"]["1"]["errors"][0]["details"] == "image - Invalid image file: nope.png"


def sd15(steps: int, width: int = 128, height: int = 96, seed: int = 5) -> dict[str, Any]:
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": width, "height": height, "batch_size": 1}},
        "3": {"class_type": "KSampler", "inputs": {
            "seed": seed, "steps": steps, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
            "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "sd"}},
    }  # fmt: skip


def test_sd15_nodes_sample_with_one_progress_per_step(comfy: Comfy) -> None:
    prompt_id, frames = comfy.run(sd15(steps=4))
    progress = [f["data"] for f in frames if f["type"] == "progress"]
    assert [(p["value"], p["max"], p["node"]) for p in progress] == [(i, 4, "3") for i in range(1, 5)]
    (image,) = saved(comfy, prompt_id, node="9")
    decoded = pixels(comfy, image)
    assert decoded.size == (128, 96) and len(decoded.getcolors() or []) == 1
    again, _ = comfy.run(sd15(steps=1))
    assert pixels(comfy, saved(comfy, again, node="9")[0]).getcolors() == decoded.getcolors()  # seed decides


def test_ksampler_sends_a_png_preview_when_enabled(comfy: Comfy) -> None:
    comfy.control(previews=True)
    ws, _ = comfy.connect("viewer")
    prompt_id = comfy.submit(sd15(steps=2), "viewer").json()["prompt_id"]
    binaries = []
    while True:
        opcode, data = ws.recv_data()
        if opcode == websocket.ABNF.OPCODE_BINARY:
            binaries.append(data)
        elif json.loads(data) == {"type": "executing", "data": {"node": None, "prompt_id": prompt_id}}:
            break
    (preview,) = binaries
    assert struct.unpack(">II", preview[:8]) == (1, 2)
    with PILImage.open(io.BytesIO(preview[8:])) as decoded:
        assert decoded.size == (16, 12)


def advanced(start: int, end: int, add_noise: str = "enable", steps: int = 6) -> dict[str, Any]:
    """sd15() with a KSamplerAdvanced of the same seed in place of its KSampler."""
    graph = sd15(steps)
    graph["3"] = {"class_type": "KSamplerAdvanced", "inputs": {
        "add_noise": add_noise, "noise_seed": 5, "steps": steps, "cfg": 7.0, "sampler_name": "euler",
        "scheduler": "normal", "start_at_step": start, "end_at_step": end, "return_with_leftover_noise": "disable",
        "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}}  # fmt: skip
    return graph


@pytest.mark.parametrize(
    ("start", "end", "run"),
    [(0, 10000, 6), (0, 4, 4), (4, 10000, 2), (6, 10000, 0), (3, 2, 0)],
    ids=["all", "base-part", "refiner-part", "start-at-end", "end-before-start"],
)
def test_ksampler_advanced_runs_the_steps_from_start_to_end(comfy: Comfy, start: int, end: int, run: int) -> None:
    prompt_id, frames = comfy.run(advanced(start, end))
    progress = [f["data"] for f in frames if f["type"] == "progress"]
    assert [(p["value"], p["max"], p["node"]) for p in progress] == [(i, run, "3") for i in range(1, run + 1)]
    if not run:  # nothing to run: ComfyUI hands the latent back as it came (here, empty: black)
        assert pixels(comfy, saved(comfy, prompt_id, node="9")[0]).getcolors() == [(128 * 96, (0, 0, 0))]


def test_ksampler_advanced_paints_as_ksampler_when_it_adds_noise_and_keeps_the_latent_when_not(comfy: Comfy) -> None:
    def color(graph: dict[str, Any]) -> tuple[int, ...]:
        prompt_id, _ = comfy.run(graph)
        ((_, rgb),) = pixels(comfy, saved(comfy, prompt_id, node="9")[0]).getcolors() or []
        return tuple(rgb)

    painted = color(sd15(steps=6))
    assert color(advanced(0, 10000)) == painted  # same seed and text, from step 0: KSampler's colour
    assert color(advanced(3, 10000)) == tuple(round(c / 2) for c in painted)  # from half way: half of it
    assert color(advanced(0, 10000, add_noise="disable")) == (0, 0, 0)  # no noise, nothing painted


def test_node_crash_becomes_execution_error(comfy: Comfy) -> None:
    # TestSleep returns "*" so validation lets an INT reach SaveImage; ComfyUI fails at run time too.
    prompt = {
        "1": {"class_type": "PrimitiveInt", "inputs": {"value": 5}},
        "2": {"class_type": "TestSleep", "inputs": {"value": ["1", 0], "seconds": 0.0}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "x"}},
    }
    prompt_id, frames = comfy.run(prompt)
    error = frames[-3]["data"]
    assert frames[-3]["type"] == "execution_error" and error["node_id"] == "3"
    assert error["exception_type"] == "AttributeError" and error["executed"] == ["1", "2"]
    assert error["current_inputs"]["images"] == [5] and error["current_inputs"]["extra_pnginfo"] == [None]
    assert comfy.history(prompt_id)[prompt_id]["status"]["status_str"] == "error"


def test_text_nodes_and_preview_any(comfy: Comfy) -> None:
    prompt = {
        "1": {"class_type": "PrimitiveString", "inputs": {"value": "a"}},
        "2": {"class_type": "StringConcatenate", "inputs": {"string_a": ["1", 0], "string_b": "b", "delimiter": "-"}},
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}},
    }
    prompt_id, _ = comfy.run(prompt)
    assert comfy.history(prompt_id)[prompt_id]["outputs"] == {"3": {"text": ["a-b"]}}


def test_image_shape_nodes(comfy: Comfy) -> None:
    prompt = {
        "1": empty(width=100, height=50, color=0x102030),
        "2": {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "bilinear", "width": 0,
                                                       "height": 100, "crop": "disabled"}},
        "3": {"class_type": "ImageCrop", "inputs": {"image": ["2", 0], "width": 150, "height": 30, "x": 100, "y": 0}},
        "4": {"class_type": "ImageScaleBy", "inputs": {"image": ["3", 0], "upscale_method": "area", "scale_by": 0.5}},
        "5": {"class_type": "ImageBatch", "inputs": {"image1": ["4", 0], "image2": ["6", 0]}},
        "6": {"class_type": "ImageSharpen", "inputs": {"image": ["1", 0], "sharpen_radius": 1, "sigma": 1.0,
                                                         "alpha": 1.0}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "shape"}},
    }  # fmt: skip
    prompt_id, _ = comfy.run(prompt)
    first, second = (pixels(comfy, image) for image in saved(comfy, prompt_id, node="7"))
    assert first.size == second.size == (50, 15)
    assert first.getcolors() == second.getcolors() == [(50 * 15, (0x10, 0x20, 0x30))]
