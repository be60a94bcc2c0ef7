"""What each simulated node does: solid-colour images whose colour flows through the graph into real PNGs.

Colour rules tests can rely on: EmptyImage's ``color`` is 0xRRGGBB; images hold float32 channels and
ImageInvert gives 1.0 minus each, saved truncated as ComfyUI does (``values.inverted_rgb8``);
blur/sharpen/scale/crop keep colours; ImageBatch concatenates; KSampler's colour comes from the seed
and positive text, as KSamplerAdvanced's does when it adds noise (without, it keeps the input's: a refiner
pass); LoRA and ControlNet leave them as they are; an upscale model scales by the factor in its file name.
Only ImageBlur/ImageSharpen (time proportional to pixels), TestSleep (its ``seconds``), the samplers (one
progress frame per step they run) and CheckpointLoaderSimple/UNETLoader (``model_load_seconds`` when they
switch the loaded model) spend simulated time.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dispatcher.fake_comfyui.failures import SAVE_OUTSIDE_FRAMES, NodeFailure
from dispatcher.fake_comfyui.files import Dirs, OutsideOutputFolder, save_image_path
from dispatcher.fake_comfyui.png import RGB, PngError, encode_solid_png, read_jpeg_size, read_png_info
from dispatcher.fake_comfyui.values import (
    Conditioning,
    Image,
    Latent,
    Mask,
    ModelRef,
    Pixel,
    format_value,
    from_rgb8,
    invert,
    to_rgb8,
)

# 4096x4096x4 pixels take about 3.4 s, like a CPU ImageBlur with radius 31 (recorded: ~3.8 s).
BLUR_PIXELS_PER_SECOND = 20_000_000.0
TEMP_LETTERS = "abcdefghijklmnopqrstupvxyz"  # sic: ComfyUI's alphabet for preview names


@dataclass
class NodeContext:
    """What a running node may use: its identity, folders, and the executor's interruptible clock."""

    node_id: str
    prompt_id: str
    dirs: Dirs
    previews: bool
    work: Callable[[float], Awaitable[None]]
    progress: Callable[[float, float, Image | None], Awaitable[None]]
    # Makes "<folder>/<file>" the loaded diffusion model, taking the configured load time if it was not.
    load_model: Callable[[str], Awaitable[None]]


@dataclass
class NodeResult:
    outputs: tuple[Any, ...] = ()
    ui: dict[str, Any] | None = None


NodeFunction = Callable[[NodeContext, dict[str, Any]], Awaitable[NodeResult]]


def _rgb(color: int) -> RGB:
    return (color >> 16) & 0xFF, (color >> 8) & 0xFF, color & 0xFF


def _same_colors(image: Image, width: int, height: int) -> Image:
    return Image(max(1, width), max(1, height), image.colors)


async def empty_image(ctx: NodeContext, a: dict[str, Any]) -> NodeResult:
    return NodeResult((Image(a["width"], a["height"], (from_rgb8(_rgb(a["color"])),) * a["batch_size"]),))


async def image_invert(ctx: NodeContext, a: dict[str, Any]) -> NodeResult:
    image: Image = a["image"]
    return NodeResult((Image(image.width, image.height, tuple(invert(c) for c in image.colors)),))


async def image_filter(ctx: NodeContext, a: dict[str, Any]) -> NodeResult:
    """ImageBlur / ImageSharpen: a solid colour stays itself; cost grows with the pixel count."""
    image: Image = a["image"]
    await ctx.work(image.pixels / BLUR_PIXELS_PER_SECOND)
    return NodeResult((image,))


async def image_scale(ctx: NodeContext, a: dict[str, Any]) -> NodeResult:
    image: Image = a["image"]
    width, height = a["width"], a["height"]
    if width == 0 and height == 0:
        return NodeResult((image,))
    if width == 0:
        width = max(1, round(image.width * height / image.height))
    elif height == 0:
        height = max(1, round(image.height * width / image.width))
    return NodeResult((_same_colors(image, width, height),))


async def image_scale_by(ctx: NodeContext, a: dict[str, Any]) -> NodeResult:
    image: Image = a["image"]
    scale = a["scale_by"]
    return NodeResult((_same_colors(image, round(image.width * scale), round(image.height * scale)),))


async def image_crop(ctx: NodeContext, a: dict[str, Any]) -> NodeResult:
    image: Image = a["image"]
    x, y = min(a["x"], image.width - 1), min(a["y"], image.height - 1)
    width = min(x + a["width"], image.width) - x
    height = min(y + a["height"], image.height) - y
    return NodeResult((_same_colors(image, width, height),))


async def image_batch(ctx: NodeContext, a: dict[str, Any]) -> NodeResult:
    first: Image = a["image1"]
    second: Image = a["image2"]  # resized to the first image's size, as ComfyUI does
    return NodeResult((Image(first.width, first.height, first.colors + second.colors),))


async def solid_mask(ctx: NodeContext, a: dict[str, Any]) -> NodeResult:
    return NodeResult((Mask(a["width"], a["height"], (float(a["value"]),)),))


async def passthrough(ctx: NodeContext, a: dict[str, Any]) -> NodeResult:
    return NodeResult((a["value"],))


async def string_concatenate(ctx: NodeContext, a: dict[str, Any]) -> NodeResult:
    return NodeResult((a["delimiter"].join((a["string_a"], a["string_b"])),))


async def preview_any(ctx: NodeContext, a: dict[str, Any]) -> NodeResult:
    source = a.get("source")
    if isinstance(source, str):
        text = source
    elif isinstance(source, bool | int | float):
        text = str(source)
    elif source is None:
        text = "None"
    else:
        try:
            text = json.dumps(source, indent=4)  # as PreviewAny prints lists and dicts
        except TypeError:
            text = str(format_value(source))
    return NodeResult((), {"text": [text]})


async def test_sleep(ctx: NodeContext, a: dict[str, Any]) -> NodeResult:
    """Progress about every 10 ms with the elapsed seconds (clamped to ``seconds``), as the testing pack does."""
    seconds = float(a["seconds"])
    start = time.time()
    now = start
    while now < start + seconds:
        now = time.time()
        await ctx.progress(min(now - start, seconds), seconds, None)
        await ctx.work(0.01)
    return NodeResult((a["value"],))


# Below this many pixels a frame is encoded inline: a thread hop would cost more than the work.
INLINE_PNG_PIXELS = 512 * 512


async def _write_png(path: str, image: Image, pixel: Pixel, text: dict[str, str], level: int) -> None:
    color = to_rgb8(pixel)
    if image.width * image.height <= INLINE_PNG_PIXELS:
        Path(path).write_bytes(encode_solid_png(image.width, image.height, color, text=text, compress_level=level))
        return
    # Large frames take a noticeable moment to compress: keep that off the event loop.
    data = await asyncio.to_thread(encode_solid_png, image.width, image.height, color, text=text, compress_level=level)
    await asyncio.to_thread(Path(path).write_bytes, data)


async def _save(ctx: NodeContext, a: dict[str, Any], folder_kind: str, prefix: str, level: int) -> NodeResult:
    image: Image = a["images"]
    base = ctx.dirs.output if folder_kind == "output" else ctx.dirs.temp
    try:
        folder, stem, counter, subfolder = save_image_path(prefix, base, image.width, image.height)
    except OutsideOutputFolder as exc:
        raise NodeFailure("Exception", str(exc), SAVE_OUTSIDE_FRAMES) from exc
    text: dict[str, str] = {}
    if a.get("prompt") is not None:
        text["prompt"] = json.dumps(a["prompt"])
    for key, value in (a.get("extra_pnginfo") or {}).items():
        text[key] = json.dumps(value)
    results = []
    for batch_number, color in enumerate(image.colors):
        name = f"{stem.replace('%batch_num%', str(batch_number))}_{counter:05}_.png"
        await _write_png(os.path.join(folder, name), image, color, text, level)
        results.append({"filename": name, "subfolder": subfolder, "type": folder_kind})
        counter += 1
    return NodeResult((), {"images": results})


async def save_image(ctx: NodeContext, a: dict[str, Any]) -> NodeResult:
    return await _save(ctx, a, "output", a["filename_prefix"], 4)


async def preview_image(ctx: NodeContext, a: dict[str, Any]) -> NodeResult:
    suffix = "".join(random.choice(TEMP_LETTERS) for _ in range(5))
    return await _save(ctx, a, "temp", f"ComfyUI_temp_{suffix}", 1)


async def load_image(ctx: NodeContext, a: dict[str, Any]) -> NodeResult:
    path = ctx.dirs.input_path(a["image"])
    data = await asyncio.to_thread(Path(path).read_bytes)
    try:
        info = read_png_info(data)
        mask = Mask(info.width, info.height, (1.0 - info.alpha / 255.0,)) if info.has_alpha else None
        image = Image(info.width, info.height, (from_rgb8(info.color),))
    except PngError:
        try:
            width, height = read_jpeg_size(data)
        except PngError as exc:
            raise NodeFailure("PIL.UnidentifiedImageError", f"cannot identify image file {path!r}") from exc
        image, mask = Image(width, height, (from_rgb8((128, 128, 128)),)), None
    return NodeResult((image, mask or Mask(64, 64, (0.0,))))


def validate_load_image(dirs: Dirs) -> Callable[[Any], bool | str]:
    """LoadImage's VALIDATE_INPUTS: the file must exist (else "Invalid image file: NAME")."""

    def check(inputs: Any) -> bool | str:
        name = inputs["image"]
        return True if os.path.exists(dirs.input_path(str(name))) else f"Invalid image file: {name}"

    return check


async def checkpoint_loader(ctx: NodeContext, a: dict[str, Any]) -> NodeResult:
    name = a["ckpt_name"]
    await ctx.load_model(f"checkpoints/{name}")
    return NodeResult((ModelRef("MODEL", name), ModelRef("CLIP", name), ModelRef("VAE", name)))


async def unet_loader(ctx: NodeContext, a: dict[str, Any]) -> NodeResult:
    name = a["unet_name"]
    await ctx.load_model(f"diffusion_models/{name}")
    return NodeResult((ModelRef("MODEL", name),))


def file_loader(kind: str, input_name: str) -> NodeFunction:
    """A loader of one small model file (VAE, CLIP, ControlNet, upscale model): no load time simulated."""

    async def load(ctx: NodeContext, a: dict[str, Any]) -> NodeResult:
        return NodeResult((ModelRef(kind, a[input_name]),))

    return load


async def lora_loader(ctx: NodeContext, a: dict[str, Any]) -> NodeResult:
    return NodeResult((a["model"], a["clip"]))  # the patched models stand for the same ones here


async def controlnet_apply(ctx: NodeContext, a: dict[str, Any]) -> NodeResult:
    return NodeResult((a["positive"], a["negative"]))


_SCALE = re.compile(r"(?:^|[^0-9])([1-8])x|x([1-8])(?:[^0-9]|$)", re.IGNORECASE)


def upscale_factor(model_name: str) -> int:
    """The scale an upscale model's file name states (``4x-UltraSharp.pth``, ``RealESRGAN_x2plus.pth``); else 4."""
    match = _SCALE.search(os.path.basename(model_name))
    return int(match.group(1) or match.group(2)) if match else 4


async def image_upscale_with_model(ctx: NodeContext, a: dict[str, Any]) -> NodeResult:
    model: ModelRef = a["upscale_model"]
    image: Image = a["image"]
    scale = upscale_factor(model.name)
    return NodeResult((_same_colors(image, image.width * scale, image.height * scale),))


async def clip_text_encode(ctx: NodeContext, a: dict[str, Any]) -> NodeResult:
    return NodeResult((Conditioning(str(a["text"])),))


async def empty_latent(ctx: NodeContext, a: dict[str, Any]) -> NodeResult:
    return NodeResult((Latent(a["width"] // 8, a["height"] // 8, ((0, 0, 0),) * a["batch_size"]),))


def _seed_color(seed: int, positive: Conditioning) -> RGB:
    """The colour a sampler paints: from its noise seed and positive text, as a real one's image is."""
    digest = hashlib.sha256(f"{seed}:{positive.text}".encode()).digest()
    return (digest[0], digest[1], digest[2])


def _paint(latent: Latent, target: RGB, strength: float) -> Latent:
    """Strength 1 paints ``target``; less keeps that much of the input latent (image to image)."""

    def mix(source: RGB) -> RGB:
        r, g, b = (round(s * (1.0 - strength) + t * strength) for s, t in zip(source, target, strict=True))
        return (r, g, b)

    return Latent(latent.width, latent.height, tuple(mix(source) for source in latent.colors))


async def _run_steps(ctx: NodeContext, result: Latent, steps: int) -> None:
    """One interruptible progress frame per step (1..steps of steps), the preview with the last, as ComfyUI's
    sampler callback sends them."""
    for step in range(steps):
        await ctx.work(0.0)
        preview = None
        if ctx.previews and step == steps - 1:
            preview = Image(max(1, result.width), max(1, result.height), (from_rgb8(result.colors[0]),))
        await ctx.progress(step + 1, steps, preview)


async def ksampler(ctx: NodeContext, a: dict[str, Any]) -> NodeResult:
    result = _paint(a["latent_image"], _seed_color(a["seed"], a["positive"]), float(a["denoise"]))
    await _run_steps(ctx, result, int(a["steps"]))
    return NodeResult((result,))


async def ksampler_advanced(ctx: NodeContext, a: dict[str, Any]) -> NodeResult:
    """Steps ``start_at_step`` to ``min(end_at_step, steps)`` of a ``steps``-step schedule, one progress frame each
    (ComfyUI's callback counts the steps it runs); with none to run, the latent comes back as it came, as in ComfyUI.

    ``add_noise`` enable paints the seed's colour as KSampler does, at the strength ``(steps - start_at_step) /
    steps`` (all of it from step 0). ``add_noise`` disable draws no noise, so nothing new is painted: the output
    keeps the input latent's colours exactly (a refiner pass goes on with the base pass's image, whatever its
    ``noise_seed``). ``return_with_leftover_noise`` changes no colour: the fake's latents hold no noise.
    """
    latent: Latent = a["latent_image"]
    steps, start = int(a["steps"]), int(a["start_at_step"])
    run = min(int(a["end_at_step"]), steps) - start
    if run <= 0:
        return NodeResult((latent,))
    result = latent
    if a["add_noise"] == "enable":
        result = _paint(latent, _seed_color(a["noise_seed"], a["positive"]), (steps - start) / steps)
    await _run_steps(ctx, result, run)
    return NodeResult((result,))


async def vae_decode(ctx: NodeContext, a: dict[str, Any]) -> NodeResult:
    latent: Latent = a["samples"]
    return NodeResult((Image(latent.width * 8, latent.height * 8, tuple(from_rgb8(c) for c in latent.colors)),))


async def vae_encode(ctx: NodeContext, a: dict[str, Any]) -> NodeResult:
    image: Image = a["pixels"]
    return NodeResult((Latent(image.width // 8, image.height // 8, tuple(to_rgb8(c) for c in image.colors)),))


async def vae_encode_for_inpaint(ctx: NodeContext, a: dict[str, Any]) -> NodeResult:
    """Pixels under the mask (rounded) turn mid-grey before encoding, as ComfyUI's ``VAEEncodeForInpaint``; a
    solid mask covers a whole frame or none of it."""
    image: Image = a["pixels"]
    mask: Mask = a["mask"]
    grey: Pixel = (0.5, 0.5, 0.5)
    colors = tuple(
        grey if round(mask.values[index % len(mask.values)]) else color for index, color in enumerate(image.colors)
    )
    return NodeResult((Latent(image.width // 8, image.height // 8, tuple(to_rgb8(c) for c in colors)),))


NODE_FUNCTIONS: dict[str, tuple[str, NodeFunction]] = {
    # class_type -> (Python function name ComfyUI would show in a traceback, implementation)
    "EmptyImage": ("generate", empty_image),
    "ImageInvert": ("invert", image_invert),
    "ImageBlur": ("blur", image_filter),
    "ImageSharpen": ("sharpen", image_filter),
    "ImageScale": ("upscale", image_scale),
    "ImageScaleBy": ("upscale", image_scale_by),
    "ImageCrop": ("crop", image_crop),
    "ImageBatch": ("batch", image_batch),
    "SolidMask": ("solid", solid_mask),
    "PrimitiveInt": ("execute", passthrough),
    "PrimitiveString": ("execute", passthrough),
    "StringConcatenate": ("execute", string_concatenate),
    "PreviewAny": ("main", preview_any),
    "TestSleep": ("sleep", test_sleep),
    "SaveImage": ("save_images", save_image),
    "PreviewImage": ("save_images", preview_image),
    "LoadImage": ("load_image", load_image),
    "CheckpointLoaderSimple": ("load_checkpoint", checkpoint_loader),
    "UNETLoader": ("load_unet", unet_loader),
    "VAELoader": ("load_vae", file_loader("VAE", "vae_name")),
    "CLIPLoader": ("load_clip", file_loader("CLIP", "clip_name")),
    "LoraLoader": ("load_lora", lora_loader),
    "ControlNetLoader": ("load_controlnet", file_loader("CONTROL_NET", "control_net_name")),
    "ControlNetApplyAdvanced": ("apply_controlnet", controlnet_apply),
    "UpscaleModelLoader": ("load_model", file_loader("UPSCALE_MODEL", "model_name")),
    "ImageUpscaleWithModel": ("upscale", image_upscale_with_model),
    "CLIPTextEncode": ("encode", clip_text_encode),
    "EmptyLatentImage": ("generate", empty_latent),
    "KSampler": ("sample", ksampler),
    "KSamplerAdvanced": ("sample", ksampler_advanced),
    "VAEDecode": ("decode", vae_decode),
    "VAEEncode": ("encode", vae_encode),
    "VAEEncodeForInpaint": ("encode", vae_encode_for_inpaint),
}
