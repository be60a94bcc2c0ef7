"""The bundled SDXL and SD 1.5 inpainting graphs run on the fake as on a ComfyUI holding their model files.

The fake holds the bundled workflows' checkpoints by default; given others (``--models checkpoints=...``) it refuses,
like a real ComfyUI, a graph naming one it lacks. The inpainting graph needs its input image uploaded first.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_comfy_helpers import Comfy, pixels, saved, upload
from PIL import Image as PILImage

from dispatcher.fake_comfyui import BackgroundFake, FakeConfig

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
CHECKPOINTS = ("sd-v1-5-inpainting.ckpt", "sd_xl_base_1.0.safetensors", "sd_xl_refiner_1.0.safetensors")


def graph(folder: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((WORKFLOWS / folder / "workflow.json").read_text())
    return loaded


@pytest.fixture
def models_comfy(tmp_path: Path) -> Iterator[Comfy]:
    config = FakeConfig(port=0, output_dir=str(tmp_path / "comfy"), models={"checkpoints": CHECKPOINTS})
    with BackgroundFake(config) as running:
        client = Comfy(running)
        yield client
        client.close()


def rgba_png(size: tuple[int, int], color: tuple[int, int, int, int]) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGBA", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_sdxl_txt2img_runs_base_then_refiner_and_saves_a_1024_square(models_comfy: Comfy) -> None:
    prompt_id, frames = models_comfy.run(graph("sdxl-txt2img"))
    assert frames[-3]["type"] == "execution_success"
    progress = [(f["data"]["node"], f["data"]["value"], f["data"]["max"]) for f in frames if f["type"] == "progress"]
    # Of 25 steps the base (10) runs 0-20 and leaves its noise; the refiner (11) runs the last 5.
    assert progress == [("10", step, 20) for step in range(1, 21)] + [("11", step, 5) for step in range(1, 6)]
    (image,) = saved(models_comfy, prompt_id, node="19")
    decoded = pixels(models_comfy, image)
    assert decoded.size == (1024, 1024)

    # The refiner adds no noise: the image keeps the colour the base pass painted.
    base_only = graph("sdxl-txt2img")
    base_only["17"]["inputs"]["samples"] = ["10", 0]
    base_id, _ = models_comfy.run(base_only)
    assert pixels(models_comfy, saved(models_comfy, base_id, node="19")[0]).getcolors() == decoded.getcolors()


def test_sd15_inpaint_runs_on_the_uploaded_image(models_comfy: Comfy) -> None:
    # Transparent pixels are the mask (LoadImage's MASK is 1 - alpha), as in ComfyUI's inpainting example.
    upload(models_comfy, "yosemite_inpaint_example.png", rgba_png((96, 64), (30, 90, 150, 0)))
    prompt_id, frames = models_comfy.run(graph("sd15-inpaint"))
    assert frames[-3]["type"] == "execution_success"
    (image,) = saved(models_comfy, prompt_id, node="8")
    assert pixels(models_comfy, image).size == (96, 64)


@pytest.fixture
def sd15_comfy(tmp_path: Path) -> Iterator[Comfy]:
    config = FakeConfig(port=0, output_dir=str(tmp_path / "comfy"), models={"checkpoints": ("v1-5-pruned.ckpt",)})
    with BackgroundFake(config) as running:
        client = Comfy(running)
        yield client
        client.close()


@pytest.mark.parametrize("folder", ["sdxl-txt2img", "sd15-inpaint"])
def test_without_their_checkpoint_the_graphs_are_refused_as_comfyui_would(sd15_comfy: Comfy, folder: str) -> None:
    if folder == "sd15-inpaint":  # its image first: the refusal must be the checkpoint's
        upload(sd15_comfy, "yosemite_inpaint_example.png", rgba_png((8, 8), (30, 90, 150, 0)))
    reply = sd15_comfy.submit(graph(folder), "c")
    assert reply.status_code == 400
    assert "ckpt_name" in json.dumps(reply.json()["node_errors"])
