"""Schemas of the simulated nodes that save every kind of output, and of the model-free nodes that feed them.

Each follows ComfyUI 0.3.64's own definition: ``SaveAnimatedWEBP``/``SaveAnimatedPNG`` (comfy_extras/
nodes_images.py, classic nodes), ``CreateVideo``/``SaveVideo`` (comfy_extras/nodes_video.py, V3 schema),
``EmptyAudio`` and ``SaveAudio``/``SaveAudioMP3``/``SaveAudioOpus`` (comfy_extras/nodes_audio.py),
``EmptyLatentHunyuan3Dv2``/``VAEDecodeHunyuan3D``/``VoxelToMeshBasic``/``SaveGLB`` (comfy_extras/
nodes_hunyuan3d.py), and VideoHelperSuite's ``VHS_VideoCombine`` (its ``format`` list holds the formats the
fake can write: ``image/gif``, ``image/webp``, ``video/h264-mp4``).
"""

from __future__ import annotations

from typing import Any

from dispatcher.fake_comfyui.nodeschema import SAVE_PREFIX_TIP, Catalog, NodeSchema, combo_input, float_input, int_input

HIDDEN_PNG = {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}
WEBP_METHODS = {"default": 4, "fastest": 0, "slowest": 6}
VIDEO_FORMATS = ["auto", "mp4"]  # comfy_api's VideoContainer
VIDEO_CODECS = ["auto", "h264"]  # comfy_api's VideoCodec
MP3_QUALITIES = ["V0", "128k", "320k"]
OPUS_QUALITIES = ["64k", "96k", "128k", "192k", "320k"]
VHS_FORMATS = ["image/gif", "image/webp", "video/h264-mp4"]
VHS_FORMAT_WIDGETS: dict[str, Any] = {
    "image/webp": [["lossless", "BOOLEAN", {"default": True}]],
    "video/h264-mp4": [
        ["pix_fmt", ["yuv420p", "yuv420p10le"]],
        ["crf", "INT", {"default": 19, "min": 0, "max": 100, "step": 1}],
        ["save_metadata", "BOOLEAN", {"default": True}],
        ["trim_to_audio", "BOOLEAN", {"default": False}],
    ],
}
VHS_CATEGORY = "Video Helper Suite \U0001f3a5\U0001f165\U0001f157\U0001f162"
_IMAGES = "comfy_extras.nodes_images"
_VIDEO = "comfy_extras.nodes_video"
_AUDIO = "comfy_extras.nodes_audio"
_3D = "comfy_extras.nodes_hunyuan3d"


def _audio_save(name: str, display: str, quality: list[str] | None, default: str = "") -> NodeSchema:
    required: dict[str, Any] = {"audio": ("AUDIO",), "filename_prefix": ("STRING", {"default": "audio/ComfyUI"})}
    if quality is not None:
        required["quality"] = (quality, {"default": default})
    return NodeSchema(
        name, {"required": required, "hidden": HIDDEN_PNG}, (), "audio", display, python_module=_AUDIO,
        output_node=True,
    )  # fmt: skip


def media_schemas(catalog: Catalog) -> list[NodeSchema]:
    """The schemas, in the order ``/object_info`` lists them after the core nodes."""
    fps = float_input(6.0, 0.01, 1000.0, 0.01)
    return [
        NodeSchema("SaveAnimatedWEBP", {"required": {
            "images": ("IMAGE",), "filename_prefix": ("STRING", {"default": "ComfyUI"}), "fps": fps,
            "lossless": ("BOOLEAN", {"default": True}), "quality": int_input(80, 0, 100, None),
            "method": (list(WEBP_METHODS),),
        }, "hidden": HIDDEN_PNG}, (), "image/animation", python_module=_IMAGES, output_node=True),
        NodeSchema("SaveAnimatedPNG", {"required": {
            "images": ("IMAGE",), "filename_prefix": ("STRING", {"default": "ComfyUI"}), "fps": fps,
            "compress_level": int_input(4, 0, 9, None),
        }, "hidden": HIDDEN_PNG}, (), "image/animation", python_module=_IMAGES, output_node=True),
        NodeSchema("CreateVideo", {
            "required": {
                "images": ("IMAGE", {"tooltip": "The images to create a video from."}),
                "fps": float_input(30.0, 1.0, 120.0, 1.0),
            },
            "optional": {"audio": ("AUDIO", {"tooltip": "The audio to add to the video."})},
        }, ("VIDEO",), "image/video", "Create Video", "Create a video from images.", python_module=_VIDEO, v3=True),
        NodeSchema("SaveVideo", {"required": {
            "video": ("VIDEO", {"tooltip": "The video to save."}),
            "filename_prefix": ("STRING", {"tooltip": SAVE_PREFIX_TIP, "default": "video/ComfyUI", "multiline": False}),
            "format": combo_input(VIDEO_FORMATS, tooltip="The format to save the video as.", default="auto"),
            "codec": combo_input(VIDEO_CODECS, tooltip="The codec to use for the video.", default="auto"),
        }, "hidden": HIDDEN_PNG}, (), "image/video", "Save Video",
            "Saves the input images to your ComfyUI output directory.", python_module=_VIDEO, output_node=True,
            v3=True),
        NodeSchema("EmptyAudio", {"required": {
            "duration": float_input(60.0, 0.0, 0xFFFFFFFFFFFFFFFF, 0.01,
                                    tooltip="Duration of the empty audio clip in seconds"),
            "sample_rate": ("INT", {"default": 44100, "tooltip": "Sample rate of the empty audio clip."}),
            "channels": int_input(2, 1, 2, None, tooltip="Number of audio channels (1 for mono, 2 for stereo)."),
        }}, ("AUDIO",), "audio", "Empty Audio", python_module=_AUDIO),
        _audio_save("SaveAudio", "Save Audio (FLAC)", None),
        _audio_save("SaveAudioMP3", "Save Audio (MP3)", MP3_QUALITIES, "V0"),
        _audio_save("SaveAudioOpus", "Save Audio (Opus)", OPUS_QUALITIES, "128k"),
        NodeSchema("EmptyLatentHunyuan3Dv2", {"required": {
            "resolution": int_input(3072, 1, 8192, None),
            "batch_size": int_input(1, 1, 4096, None, tooltip="The number of latent images in the batch."),
        }}, ("LATENT",), "latent/3d", python_module=_3D),
        NodeSchema("VAEDecodeHunyuan3D", {"required": {
            "samples": ("LATENT",), "vae": ("VAE",), "num_chunks": int_input(8000, 1000, 500000, None),
            "octree_resolution": int_input(256, 16, 512, None),
        }}, ("VOXEL",), "latent/3d", python_module=_3D),
        NodeSchema("VoxelToMeshBasic", {"required": {
            "voxel": ("VOXEL",), "threshold": float_input(0.6, -1.0, 1.0, 0.01),
        }}, ("MESH",), "3d", python_module=_3D),
        NodeSchema("SaveGLB", {"required": {
            "mesh": ("MESH",), "filename_prefix": ("STRING", {"default": "mesh/ComfyUI"}),
        }, "hidden": HIDDEN_PNG}, (), "3d", python_module=_3D, output_node=True),
        NodeSchema("VHS_VideoCombine", {
            "required": {
                "images": ("IMAGE",),
                "frame_rate": ("FLOAT", {"default": 8, "min": 1, "step": 1}),
                "loop_count": int_input(0, 0, 100),
                "filename_prefix": ("STRING", {"default": "AnimateDiff"}),
                "format": (list(VHS_FORMATS), {"formats": VHS_FORMAT_WIDGETS}),
                "pingpong": ("BOOLEAN", {"default": False}),
                "save_output": ("BOOLEAN", {"default": True}),
            },
            "optional": {"audio": ("AUDIO",), "meta_batch": ("VHS_BatchManager",), "vae": ("VAE",)},
            "hidden": {**HIDDEN_PNG, "unique_id": "UNIQUE_ID"},
        }, ("VHS_FILENAMES",), VHS_CATEGORY, f"Video Combine {VHS_CATEGORY[-4:]}",
            python_module="custom_nodes.ComfyUI-VideoHelperSuite", output_node=True, return_names=("Filenames",)),
    ]  # fmt: skip
