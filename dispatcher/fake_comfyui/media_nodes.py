"""What the simulated save nodes of every output kind do: real files, named and reported as ComfyUI 0.3.64 does.

UI outputs (the ``executed`` event's ``output``, and ``/history``'s ``outputs``), each from the real node:

- ``SaveAnimatedWEBP``: ``{"images": [file], "animated": [batch != 1]}``; ``SaveAnimatedPNG``:
  ``{"images": [file], "animated": [true]}`` (comfy_extras/nodes_images.py);
- ``SaveVideo``: ``{"images": [file], "animated": [true]}`` (V3 ``ui.PreviewVideo``, comfy_extras/nodes_video.py);
- ``SaveAudio``/``SaveAudioMP3``/``SaveAudioOpus``: ``{"audio": [file per batch item]}`` (nodes_audio.py);
- ``SaveGLB``: ``{"3d": [file per mesh]}`` (nodes_hunyuan3d.py);
- ``VHS_VideoCombine``: ``{"gifs": [{"filename", "subfolder", "type", "format", "frame_rate", "workflow",
  "fullpath"}]}``, after a first-frame PNG that keeps the metadata (VideoHelperSuite's nodes.py).

File names: ``<prefix>_<counter:05>_.<ext>`` from ComfyUI's save counter, except VideoHelperSuite's
``<prefix>_<counter:05>.<ext>`` with a counter of its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dispatcher.fake_comfyui.animated import encode_apng, encode_gif, encode_webp
from dispatcher.fake_comfyui.audio import encode_flac, encode_mp3, encode_opus
from dispatcher.fake_comfyui.failures import SAVE_OUTSIDE_FRAMES, NodeFailure
from dispatcher.fake_comfyui.files import OutsideOutputFolder, save_image_path
from dispatcher.fake_comfyui.mesh import cube, encode_glb
from dispatcher.fake_comfyui.nodes import NodeContext, NodeFunction, NodeResult
from dispatcher.fake_comfyui.png import RGB, encode_solid_png
from dispatcher.fake_comfyui.values import Image, to_rgb8
from dispatcher.fake_comfyui.video import encode_mp4


@dataclass(frozen=True)
class Video:
    """VIDEO (``VideoFromComponents``): frames and their rate."""

    images: Image
    fps: float


@dataclass(frozen=True)
class Audio:
    """AUDIO: ``{"waveform": [B, C, T], "sample_rate"}``; the fake's audio is silence."""

    sample_rate: int
    channels: int
    samples: int
    batch: int = 1


@dataclass(frozen=True)
class ShapeLatent:
    """A Hunyuan3D LATENT: ``{"samples": [B, 64, resolution], "type": "hunyuan3dv2"}``."""

    resolution: int
    batch: int


@dataclass(frozen=True)
class Voxel:
    """VOXEL: a batch of occupancy grids (the fake's are solid blocks)."""

    batch: int
    resolution: int


@dataclass(frozen=True)
class Mesh:
    """MESH: a batch of triangle meshes (the fake's are cubes)."""

    batch: int


def _frames(image: Image) -> list[RGB]:
    return [to_rgb8(color) for color in image.colors]


def _target(prefix: str, base: str, width: int = 0, height: int = 0) -> tuple[str, str, int, str]:
    try:
        return save_image_path(prefix, base, width, height)
    except OutsideOutputFolder as exc:
        raise NodeFailure("Exception", str(exc), SAVE_OUTSIDE_FRAMES) from exc


async def _write(folder: str, name: str, data: bytes) -> None:
    await asyncio.to_thread(Path(os.path.join(folder, name)).write_bytes, data)


def _ref(name: str, subfolder: str, kind: str = "output") -> dict[str, str]:
    return {"filename": name, "subfolder": subfolder, "type": kind}


def _metadata(a: dict[str, Any]) -> dict[str, str]:
    """What ComfyUI embeds in saved files: the prompt, and each extra_pnginfo entry, as JSON."""
    text: dict[str, str] = {}
    if a.get("prompt") is not None:
        text["prompt"] = json.dumps(a["prompt"])
    for key, value in (a.get("extra_pnginfo") or {}).items():
        text[key] = json.dumps(value)
    return text


async def save_animated_webp(ctx: NodeContext, a: dict[str, Any]) -> NodeResult:
    image: Image = a["images"]
    folder, stem, counter, subfolder = _target(a["filename_prefix"], ctx.dirs.output, image.width, image.height)
    name = f"{stem}_{counter:05}_.webp"
    data = await asyncio.to_thread(encode_webp, image.width, image.height, _frames(image), int(1000.0 / a["fps"]))
    await _write(folder, name, data)
    return NodeResult((), {"images": [_ref(name, subfolder)], "animated": [image.batch != 1]})


async def save_animated_png(ctx: NodeContext, a: dict[str, Any]) -> NodeResult:
    image: Image = a["images"]
    folder, stem, counter, subfolder = _target(a["filename_prefix"], ctx.dirs.output, image.width, image.height)
    name = f"{stem}_{counter:05}_.png"
    duration, level = int(1000.0 / a["fps"]), a["compress_level"]
    data = await asyncio.to_thread(
        lambda: encode_apng(image.width, image.height, _frames(image), duration, text=_metadata(a), level=level)
    )
    await _write(folder, name, data)
    return NodeResult((), {"images": [_ref(name, subfolder)], "animated": [True]})


async def create_video(ctx: NodeContext, a: dict[str, Any]) -> NodeResult:
    return NodeResult((Video(a["images"], float(a["fps"])),))


async def save_video(ctx: NodeContext, a: dict[str, Any]) -> NodeResult:
    video: Video = a["video"]
    image = video.images
    folder, stem, counter, subfolder = _target(a["filename_prefix"], ctx.dirs.output, image.width, image.height)
    name = f"{stem}_{counter:05}_.mp4"  # the extension of format "auto" and "mp4" alike
    data = await asyncio.to_thread(encode_mp4, image.width, image.height, _frames(image), video.fps)
    await _write(folder, name, data)
    return NodeResult((), {"images": [_ref(name, subfolder)], "animated": [True]})


async def empty_audio(ctx: NodeContext, a: dict[str, Any]) -> NodeResult:
    rate = int(a["sample_rate"])
    return NodeResult((Audio(rate, int(a["channels"]), round(float(a["duration"]) * rate)),))


def audio_saver(extension: str) -> NodeFunction:
    """SaveAudio (flac), SaveAudioMP3 (mp3), SaveAudioOpus (opus): one file per item of the batch."""

    async def save(ctx: NodeContext, a: dict[str, Any]) -> NodeResult:
        audio: Audio = a["audio"]
        folder, stem, counter, subfolder = _target(a["filename_prefix"], ctx.dirs.output)
        results = []
        for batch_number in range(audio.batch):
            name = f"{stem.replace('%batch_num%', str(batch_number))}_{counter:05}_.{extension}"
            if extension == "mp3":
                kbps = {"320k": 320}.get(str(a.get("quality")), 128)
                data = encode_mp3(audio.sample_rate, audio.channels, audio.samples, kbps)
            elif extension == "opus":
                data = encode_opus(audio.sample_rate, audio.channels, audio.samples)
            else:
                data = encode_flac(audio.sample_rate, audio.channels, audio.samples)
            await _write(folder, name, data)
            results.append(_ref(name, subfolder))
            counter += 1
        return NodeResult((), {"audio": results})

    return save


async def empty_latent_3d(ctx: NodeContext, a: dict[str, Any]) -> NodeResult:
    return NodeResult((ShapeLatent(int(a["resolution"]), int(a["batch_size"])),))


async def vae_decode_3d(ctx: NodeContext, a: dict[str, Any]) -> NodeResult:
    latent: ShapeLatent = a["samples"]
    return NodeResult((Voxel(latent.batch, int(a["octree_resolution"])),))


async def voxel_to_mesh(ctx: NodeContext, a: dict[str, Any]) -> NodeResult:
    voxel: Voxel = a["voxel"]
    return NodeResult((Mesh(voxel.batch),))


async def save_glb(ctx: NodeContext, a: dict[str, Any]) -> NodeResult:
    mesh: Mesh = a["mesh"]
    folder, stem, counter, subfolder = _target(a["filename_prefix"], ctx.dirs.output)
    vertices, faces = cube()
    results = []
    for _ in range(mesh.batch):
        name = f"{stem}_{counter:05}_.glb"
        await _write(folder, name, encode_glb(vertices, faces, _metadata(a)))
        results.append(_ref(name, subfolder))
        counter += 1
    return NodeResult((), {"3d": results})


def vhs_counter(folder: str, stem: str) -> int:
    """VideoHelperSuite's own counter: one more than the highest ``<stem>_<n>...`` file in the folder."""
    matcher = re.compile(f"{re.escape(stem)}_(\\d+)\\D*\\..+", re.IGNORECASE)
    found = (matcher.fullmatch(name) for name in os.listdir(folder))
    return max((int(m.group(1)) for m in found if m), default=0) + 1


async def video_combine(ctx: NodeContext, a: dict[str, Any]) -> NodeResult:
    image: Image = a["images"]
    save_output = bool(a["save_output"])
    folder, stem, _, subfolder = _target(a["filename_prefix"], ctx.dirs.output if save_output else ctx.dirs.temp)
    counter = vhs_counter(folder, stem)
    frames = _frames(image)
    first = f"{stem}_{counter:05}.png"  # the first frame, which keeps the workflow's metadata
    await _write(folder, first, encode_solid_png(image.width, image.height, frames[0], text=_metadata(a)))
    if a["pingpong"]:
        frames += frames[-2:0:-1]
    fmt, rate, loop = str(a["format"]), float(a["frame_rate"]), int(a["loop_count"])
    if fmt == "image/gif":
        data, extension = encode_gif(image.width, image.height, frames, round(1000 / rate), loop), "gif"
    elif fmt == "image/webp":
        data, extension = encode_webp(image.width, image.height, frames, round(1000 / rate), loop), "webp"
    else:  # video/h264-mp4; ffmpeg's loop filter plays the frames loop_count more times
        data, extension = encode_mp4(image.width, image.height, frames * (loop + 1), rate), "mp4"
    name = f"{stem}_{counter:05}.{extension}"
    await _write(folder, name, data)
    preview = {
        **_ref(name, subfolder, "output" if save_output else "temp"),
        "format": fmt,
        "frame_rate": rate,
        "workflow": first,
        "fullpath": os.path.join(folder, name),
    }
    files = [os.path.join(folder, first), os.path.join(folder, name)]
    return NodeResult(((save_output, files),), {"gifs": [preview]})


MEDIA_FUNCTIONS: dict[str, tuple[str, NodeFunction]] = {
    # class_type -> (Python function name ComfyUI would show in a traceback, implementation)
    "SaveAnimatedWEBP": ("save_images", save_animated_webp),
    "SaveAnimatedPNG": ("save_images", save_animated_png),
    "CreateVideo": ("execute", create_video),
    "SaveVideo": ("execute", save_video),
    "EmptyAudio": ("create_empty_audio", empty_audio),
    "SaveAudio": ("save_flac", audio_saver("flac")),
    "SaveAudioMP3": ("save_mp3", audio_saver("mp3")),
    "SaveAudioOpus": ("save_opus", audio_saver("opus")),
    "EmptyLatentHunyuan3Dv2": ("generate", empty_latent_3d),
    "VAEDecodeHunyuan3D": ("decode", vae_decode_3d),
    "VoxelToMeshBasic": ("decode", voxel_to_mesh),
    "SaveGLB": ("save", save_glb),
    "VHS_VideoCombine": ("combine_video", video_combine),
}
