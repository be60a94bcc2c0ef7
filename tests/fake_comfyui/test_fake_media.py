"""The fake's save nodes of every output kind: ComfyUI 0.3.64's UI output shapes, and real files behind /view.

Images are decoded with Pillow; the other containers are walked by hand (MP4 boxes, FLAC's STREAMINFO, MPEG audio
frame headers, Ogg pages, GLB chunks) since the project has no media library.
"""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from fake_comfy_helpers import Comfy, empty
from PIL import Image as PILImage

from dispatcher.fake_comfyui.animated import encode_gif, encode_webp, merge_frames
from dispatcher.fake_comfyui.audio import encode_flac, encode_mp3, encode_opus, opus_rate
from dispatcher.fake_comfyui.mesh import cube, encode_glb
from dispatcher.fake_comfyui.video import encode_mp4

KINDS = Path(__file__).resolve().parents[1] / "e2e" / "output_kinds"
ANIMATED_WEBP = Path(__file__).resolve().parents[2] / "workflows" / "animated-webp" / "workflow.json"


def kind_workflow(name: str) -> dict[str, Any]:
    graph: dict[str, Any] = json.loads((KINDS / name / "workflow.json").read_text())
    return graph


def run_outputs(comfy: Comfy, graph: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(node -> the ``executed`` event's output, node -> /history's outputs) of a successful run."""
    prompt_id, frames = comfy.run(graph)
    assert not [f for f in frames if f["type"] == "execution_error"], frames
    executed = {f["data"]["node"]: f["data"]["output"] for f in frames if f["type"] == "executed"}
    return executed, comfy.history(prompt_id)[prompt_id]["outputs"]


def view(comfy: Comfy, ref: dict[str, Any]) -> bytes:
    reply = comfy.get("/view", params={k: ref[k] for k in ("filename", "subfolder", "type")})
    assert reply.status_code == 200
    assert int(reply.headers["Content-Length"]) == len(reply.content)
    return reply.content


def frames_of(data: bytes) -> list[tuple[tuple[int, ...], int]]:
    """(colour of the top-left pixel, duration) of each frame Pillow decodes."""
    with PILImage.open(io.BytesIO(data)) as image:
        found = []
        for index in range(getattr(image, "n_frames", 1)):
            image.seek(index)
            found.append((image.convert("RGB").getpixel((0, 0)), int(image.info.get("duration", 0))))
        return found  # type: ignore[return-value]


def boxes(data: bytes, start: int = 0, end: int | None = None) -> dict[bytes, bytes]:
    """The ISO BMFF boxes at one level (type -> body)."""
    found: dict[bytes, bytes] = {}
    position, end = start, len(data) if end is None else end
    while position < end:
        size, kind = struct.unpack(">I4s", data[position : position + 8])
        found[kind] = data[position + 8 : position + size]
        position += size
    assert position == end
    return found


def test_animated_images_and_a_gif(comfy: Comfy) -> None:
    executed, history = run_outputs(comfy, kind_workflow("kinds-image"))
    assert executed == history
    webp, apng, gif = history["4"], history["5"], history["6"]
    assert webp == {
        "images": [{"filename": "webp_00001_.webp", "subfolder": "kinds", "type": "output"}],
        "animated": [True],
    }
    assert apng == {
        "images": [{"filename": "apng_00001_.png", "subfolder": "kinds", "type": "output"}],
        "animated": [True],
    }
    (preview,) = gif["gifs"]
    assert preview["filename"] == "gif_00001.gif" and preview["workflow"] == "gif_00001.png"
    assert (preview["subfolder"], preview["type"], preview["format"], preview["frame_rate"]) == (
        "kinds",
        "output",
        "image/gif",
        4.0,
    )
    assert preview["fullpath"].endswith("/kinds/gif_00001.gif")
    # Three frames in (red, red, blue): the identical two are written once, for twice as long, as Pillow does.
    assert frames_of(view(comfy, webp["images"][0])) == [((255, 0, 0), 500), ((0, 0, 255), 250)]
    assert frames_of(view(comfy, apng["images"][0])) == [((255, 0, 0), 500), ((0, 0, 255), 250)]
    assert frames_of(view(comfy, preview)) == [((255, 0, 0), 500), ((0, 0, 255), 250)]
    first = view(comfy, {"filename": preview["workflow"], "subfolder": "kinds", "type": "output"})
    assert frames_of(first) == [((255, 0, 0), 0)]


def test_save_animated_webp_of_one_frame_is_not_animated(comfy: Comfy) -> None:
    graph = json.loads(ANIMATED_WEBP.read_text())
    graph["1"]["inputs"].update(width=16, height=8, batch_size=1, color=0x336699)
    _, history = run_outputs(comfy, graph)
    assert history["2"]["animated"] == [False]
    with PILImage.open(io.BytesIO(view(comfy, history["2"]["images"][0]))) as image:
        assert image.format == "WEBP" and image.size == (16, 8) and not getattr(image, "is_animated", False)


def test_the_bundled_animated_webp_workflow(comfy: Comfy) -> None:
    """EmptyImage (batch 4) into SaveAnimatedWEBP, as a real ComfyUI runs it: four identical frames are one."""
    _, history = run_outputs(comfy, json.loads(ANIMATED_WEBP.read_text()))
    assert history["2"] == {
        "images": [{"filename": "animated_00001_.webp", "subfolder": "", "type": "output"}],
        "animated": [True],
    }
    data = view(comfy, history["2"]["images"][0])
    assert data[:4] == b"RIFF" and data[8:16] == b"WEBPVP8X" and frames_of(data) == [((0, 0, 0), 664)]


def test_videos(comfy: Comfy) -> None:
    executed, history = run_outputs(comfy, kind_workflow("kinds-video"))
    assert executed == history
    assert history["3"] == {
        "images": [{"filename": "video_00001_.mp4", "subfolder": "kinds", "type": "output"}],
        "animated": [True],
    }
    (vhs,) = history["4"]["gifs"]
    assert (vhs["filename"], vhs["format"], vhs["frame_rate"]) == ("vhs_00001.mp4", "video/h264-mp4", 8.0)
    for ref in (history["3"]["images"][0], vhs):
        data = view(comfy, ref)
        top = boxes(data)
        assert list(top) == [b"ftyp", b"mdat", b"moov"] and top[b"ftyp"][:4] == b"isom"
        minf = boxes(boxes(boxes(top[b"moov"])[b"trak"])[b"mdia"])[b"minf"]
        stbl = boxes(boxes(minf)[b"stbl"])
        count, *sizes = struct.unpack(f">{len(stbl[b'stsz']) // 4 - 2}I", stbl[b"stsz"][8:])
        assert count == 3 and sum(sizes) == len(top[b"mdat"])
        assert b"avc1" in stbl[b"stsd"] and b"avcC" in stbl[b"stsd"]
        assert struct.unpack(">III", stbl[b"stts"][4:16]) == (1, 3, 1000)  # 3 frames of 1/8 s (timescale 8000)


def test_audio(comfy: Comfy) -> None:
    executed, history = run_outputs(comfy, kind_workflow("kinds-audio"))
    assert executed == history
    names = [history[node]["audio"][0]["filename"] for node in ("2", "3", "4")]
    assert names == ["audio_00001_.flac", "audio_00002_.mp3", "audio_00003_.opus"]
    flac, mp3, opus = (view(comfy, history[node]["audio"][0]) for node in ("2", "3", "4"))
    assert flac[:4] == b"fLaC"
    info = int.from_bytes(flac[18:26], "big")
    assert (info >> 44, ((info >> 41) & 7) + 1, info & (2**36 - 1)) == (44100, 2, 22050)
    assert mp3[0] == 0xFF and mp3[1] & 0xE0 == 0xE0 and len(mp3) % 417 == 0  # 128 kb/s at 44.1 kHz, no padding
    assert opus[:4] == b"OggS" and opus[28:36] == b"OpusHead" and opus[37] == 2


def test_text(comfy: Comfy) -> None:
    executed, history = run_outputs(comfy, kind_workflow("kinds-text"))
    assert executed == history == {"3": {"text": ["a lighthouse at dusk — 灯塔"]}}


def test_a_3d_file(comfy: Comfy) -> None:
    executed, history = run_outputs(comfy, kind_workflow("kinds-file"))
    assert (
        executed == history == {"5": {"3d": [{"filename": "mesh_00001_.glb", "subfolder": "kinds", "type": "output"}]}}
    )
    data = view(comfy, history["5"]["3d"][0])
    magic, version, length, json_length, json_type = struct.unpack("<4sIIII", data[:20])
    assert (magic, version, length, json_type) == (b"glTF", 2, len(data), 0x4E4F534A)
    gltf = json.loads(data[20 : 20 + json_length])
    assert gltf["accessors"][0]["count"] == 24 and gltf["accessors"][1]["count"] == 36
    assert "prompt" in gltf["asset"]["extras"]


def test_save_animated_webp_requires_exactly_its_inputs(comfy: Comfy) -> None:
    """What a real SaveAnimatedWEBP requires: images, filename_prefix, fps, lossless, quality, method."""
    graph = {"1": empty(), "2": {"class_type": "SaveAnimatedWEBP", "inputs": {"images": ["1", 0]}}}
    reply = comfy.submit(graph, None)
    assert reply.status_code == 400
    missing = [e["details"] for e in reply.json()["node_errors"]["2"]["errors"]]
    assert missing == ["filename_prefix", "fps", "lossless", "quality", "method"]
    graph["2"]["inputs"].update(filename_prefix="x", fps=6.0, lossless=True, quality=80, method="fastest")
    assert comfy.submit(graph, None).status_code == 200


def test_object_info_of_the_new_node_classes(comfy: Comfy) -> None:
    info = comfy.get("/object_info").json()
    webp = info["SaveAnimatedWEBP"]
    assert webp["input_order"] == {
        "required": ["images", "filename_prefix", "fps", "lossless", "quality", "method"],
        "hidden": ["prompt", "extra_pnginfo"],
    }
    assert webp["input"]["required"]["method"] == [["default", "fastest", "slowest"]]
    assert webp["output_node"] and webp["python_module"] == "comfy_extras.nodes_images"
    video = info["SaveVideo"]  # a V3 node: COMBO inputs, hidden inputs as lists
    assert video["input"]["required"]["format"] == [
        "COMBO",
        {
            "tooltip": "The format to save the video as.",
            "default": "auto",
            "multiselect": False,
            "options": ["auto", "mp4"],
        },
    ]
    assert video["input"]["hidden"] == {"prompt": ["PROMPT"], "extra_pnginfo": ["EXTRA_PNGINFO"]}
    assert info["CreateVideo"]["output"] == ["VIDEO"] and info["CreateVideo"]["output_tooltips"] == [None]
    assert info["SaveAudioMP3"]["input"]["required"]["quality"] == [["V0", "128k", "320k"], {"default": "V0"}]
    assert info["SaveGLB"]["input"]["required"]["filename_prefix"] == ["STRING", {"default": "mesh/ComfyUI"}]
    vhs = info["VHS_VideoCombine"]
    assert vhs["output"] == ["VHS_FILENAMES"] and vhs["output_name"] == ["Filenames"]
    assert vhs["input"]["required"]["format"][0] == ["image/gif", "image/webp", "video/h264-mp4"]


def test_a_v3_combo_refuses_a_value_not_in_its_options(comfy: Comfy) -> None:
    graph = kind_workflow("kinds-video")
    graph["3"]["inputs"]["format"] = "avi"
    reply = comfy.submit(graph, None)
    assert reply.status_code == 200  # as ComfyUI: the other output (node 4) is valid, so the prompt runs without 3
    (error,) = reply.json()["node_errors"]["3"]["errors"]
    assert error["type"] == "value_not_in_list" and error["details"] == "format: 'avi' not in ['auto', 'mp4']"


# -- the encoders alone --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("colors", "expected"),
    [
        ([(1, 2, 3)], [((1, 2, 3), 100)]),
        ([(1, 2, 3)] * 3, [((1, 2, 3), 300)]),
        ([(1, 2, 3), (4, 5, 6), (1, 2, 3)], [((1, 2, 3), 100), ((4, 5, 6), 100), ((1, 2, 3), 100)]),
    ],
)
def test_identical_frames_are_merged(colors: list[tuple[int, int, int]], expected: list[Any]) -> None:
    assert merge_frames(colors, 100) == expected


@pytest.mark.parametrize("size", [(1, 1), (7, 3), (300, 200)])
def test_webp_and_gif_decode_at_any_size(size: tuple[int, int]) -> None:
    colors = [(10, 20, 30), (200, 100, 0)]
    for data in (encode_webp(*size, colors, 100), encode_gif(*size, colors, 100)):
        with PILImage.open(io.BytesIO(data)) as image:
            assert image.size == size
            image.seek(1)
            assert image.convert("RGB").getpixel((size[0] - 1, size[1] - 1)) == (200, 100, 0)


def test_mp4_sizes_are_even_and_frames_are_all_there() -> None:
    data = encode_mp4(33, 17, [(0, 0, 0)] * 5, 25.0)
    tkhd = boxes(boxes(boxes(data)[b"moov"])[b"trak"])[b"tkhd"]
    assert struct.unpack(">II", tkhd[-8:]) == (34 << 16, 18 << 16)


@pytest.mark.parametrize(("rate", "channels", "samples"), [(44100, 2, 44100), (48000, 1, 5000), (16000, 1, 0)])
def test_audio_files_state_their_length(rate: int, channels: int, samples: int) -> None:
    flac = encode_flac(rate, channels, samples)
    assert int.from_bytes(flac[18:26], "big") & (2**36 - 1) == samples
    assert encode_mp3(rate, channels, samples)[:2] in (b"\xff\xfb", b"\xff\xf3")
    opus = encode_opus(rate, channels, samples)
    last = opus.rindex(b"OggS")
    granule = struct.unpack("<q", opus[last + 6 : last + 14])[0]
    assert granule == 312 + -(-samples * 48000 // rate) and opus[last + 5] == 0x04  # end of stream
    assert struct.unpack("<I", opus[40:44])[0] == opus_rate(rate)


def test_glb_of_a_cube() -> None:
    vertices, faces = cube(2.0)
    data = encode_glb(vertices, faces)
    assert len(data) % 4 == 0 and struct.unpack("<I", data[8:12])[0] == len(data)
    assert max(max(v) for v in vertices) == 1.0 and len(faces) == 12
