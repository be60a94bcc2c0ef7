"""Node schemas of the simulated nodes: what ``/object_info`` shows and what validation checks.

Shapes follow ComfyUI 0.3.64's ``node_info()`` for classic (V1) nodes (the save nodes of other output kinds are
in :mod:`dispatcher.fake_comfyui.media_schemas`); ``EmptyImage`` is byte-for-byte the
recorded ``object_info_EmptyImage.json``. Some combo lists depend on the machine (files in the input folder,
model files of each loader), so schemas are built from a :class:`Catalog`.
"""

from __future__ import annotations

import sys
from typing import Any

from dispatcher.fake_comfyui.media_schemas import media_schemas
from dispatcher.fake_comfyui.nodeschema import ANY, MAX_RESOLUTION, Catalog, NodeSchema
from dispatcher.fake_comfyui.nodeschema import SAVE_PREFIX_TIP as _SAVE_PREFIX_TIP
from dispatcher.fake_comfyui.nodeschema import float_input as _float
from dispatcher.fake_comfyui.nodeschema import int_input as _int
from dispatcher.workflows import comfy_nodes

__all__ = ["ANY", "MAX_RESOLUTION", "Catalog", "NodeSchema", "build_schemas", "types_match"]


UPSCALE_METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]
CROP_METHODS = ["disabled", "center"]
# ComfyUI 0.3.64's lists, shared with parameter inference (one place to update).
SAMPLERS = list(comfy_nodes.SAMPLERS)
SCHEDULERS = list(comfy_nodes.SCHEDULERS)
CLIP_TYPES = [
    "stable_diffusion", "stable_cascade", "sd3", "stable_audio", "mochi", "ltxv", "pixart", "cosmos", "lumina2", "wan",
    "hidream", "chroma", "ace", "omnigen2", "qwen_image", "hunyuan_image",
]  # fmt: skip
WEIGHT_DTYPES = ["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"]

_CLIP_RECIPES = (
    "[Recipes]\n\nstable_diffusion: clip-l\nstable_cascade: clip-g\nsd3: t5 xxl/ clip-g / clip-l\n"
    "stable_audio: t5 base\nmochi: t5 xxl\ncosmos: old t5 xxl\nlumina2: gemma 2 2B\nwan: umt5 xxl\n"
    " hidream: llama-3.1 (Recommend) or t5\n"
    "omnigen2: qwen vl 2.5 3B"
)
_UPSCALE_MODULE = "comfy_extras.nodes_upscale_model"
_CFG_TIP = (
    "The Classifier-Free Guidance scale balances creativity and adherence to the prompt. Higher values result "
    "in images more closely matching the prompt however too high values will negatively impact quality."
)


def build_schemas(catalog: Catalog) -> dict[str, NodeSchema]:
    """Every simulated node class, keyed by class_type, in the order ``/object_info`` lists them."""
    image_tip = {"tooltip": "The images to save."}
    hidden_png = {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}
    schemas = [
        NodeSchema(
            "KSampler",
            {"required": {
                "model": ("MODEL", {"tooltip": "The model used for denoising the input latent."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                                 "tooltip": "The random seed used for creating the noise."}),
                "steps": ("INT", {"default": 20, "min": 1, "max": 10000,
                                  "tooltip": "The number of steps used in the denoising process."}),
                "cfg": ("FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                                  "tooltip": _CFG_TIP}),
                "sampler_name": (SAMPLERS, {"tooltip": "The algorithm used when sampling, this can affect the "
                                            "quality, speed, and style of the generated output."}),
                "scheduler": (SCHEDULERS, {"tooltip": "The scheduler controls how noise is gradually removed to "
                                           "form the image."}),
                "positive": ("CONDITIONING", {"tooltip": "The conditioning describing the attributes you want to "
                                              "include in the image."}),
                "negative": ("CONDITIONING", {"tooltip": "The conditioning describing the attributes you want to "
                                              "exclude from the image."}),
                "latent_image": ("LATENT", {"tooltip": "The latent image to denoise."}),
                "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                      "tooltip": "The amount of denoising applied, lower values will maintain the "
                                      "structure of the initial image allowing for image to image sampling."}),
            }},
            ("LATENT",), "sampling", "KSampler",
            "Uses the provided model, positive and negative conditioning to denoise the latent image.",
            output_tooltips=("The denoised latent.",),
        ),
        NodeSchema(
            "CheckpointLoaderSimple",
            {"required": {"ckpt_name": (catalog.files("checkpoints"),
                                        {"tooltip": "The name of the checkpoint (model) to load."})}},
            ("MODEL", "CLIP", "VAE"), "loaders", "Load Checkpoint",
            "Loads a diffusion model checkpoint, diffusion models are used to denoise latents.",
            output_tooltips=(
                "The model used for denoising latents.",
                "The CLIP model used for encoding text prompts.",
                "The VAE model used for encoding and decoding images to and from latent space.",
            ),
        ),
        NodeSchema(
            "CLIPTextEncode",
            {"required": {
                "text": ("STRING", {"multiline": True, "dynamicPrompts": True,
                                    "tooltip": "The text to be encoded."}),
                "clip": ("CLIP", {"tooltip": "The CLIP model used for encoding the text."}),
            }},
            ("CONDITIONING",), "conditioning", "CLIP Text Encode (Prompt)",
            "Encodes a text prompt using a CLIP model into an embedding that can be used to guide the diffusion "
            "model towards generating specific images.",
            output_tooltips=("A conditioning containing the embedded text used to guide the diffusion model.",),
        ),
        NodeSchema(
            "VAEDecode",
            {"required": {"samples": ("LATENT", {"tooltip": "The latent to be decoded."}),
                          "vae": ("VAE", {"tooltip": "The VAE model used for decoding the latent."})}},
            ("IMAGE",), "latent", "VAE Decode", "Decodes latent images back into pixel space images.",
            output_tooltips=("The decoded image.",),
        ),
        NodeSchema("VAEEncode", {"required": {"pixels": ("IMAGE",), "vae": ("VAE",)}}, ("LATENT",), "latent",
                   "VAE Encode"),
        NodeSchema("VAEEncodeForInpaint", {"required": {
            "pixels": ("IMAGE",), "vae": ("VAE",), "mask": ("MASK",), "grow_mask_by": _int(6, 0, 64),
        }}, ("LATENT",), "latent/inpaint", "VAE Encode (for Inpainting)"),
        NodeSchema("VAELoader", {"required": {"vae_name": (catalog.files("vae"),)}}, ("VAE",), "loaders", "Load VAE"),
        NodeSchema(
            "EmptyLatentImage",
            {"required": {
                "width": _int(512, 16, MAX_RESOLUTION, 8, tooltip="The width of the latent images in pixels."),
                "height": _int(512, 16, MAX_RESOLUTION, 8, tooltip="The height of the latent images in pixels."),
                "batch_size": _int(1, 1, 4096, None, tooltip="The number of latent images in the batch."),
            }},
            ("LATENT",), "latent", "Empty Latent Image",
            "Create a new batch of empty latent images to be denoised via sampling.",
            output_tooltips=("The empty latent image batch.",),
        ),
        NodeSchema(
            "SaveImage",
            {"required": {"images": ("IMAGE", image_tip),
                          "filename_prefix": ("STRING", {"default": "ComfyUI", "tooltip": _SAVE_PREFIX_TIP})},
             "hidden": hidden_png},
            (), "image", "Save Image", "Saves the input images to your ComfyUI output directory.", output_node=True,
        ),
        NodeSchema(
            "PreviewImage", {"required": {"images": ("IMAGE",)}, "hidden": hidden_png},
            (), "image", "Preview Image", "Saves the input images to your ComfyUI output directory.",
            output_node=True,
        ),
        NodeSchema(
            "LoadImage", {"required": {"image": (sorted(catalog.input_images), {"image_upload": True})}},
            ("IMAGE", "MASK"), "image", "Load Image", self_validated=("image",),
        ),
        NodeSchema("ImageScale", {"required": {
            "image": ("IMAGE",), "upscale_method": (UPSCALE_METHODS,),
            "width": _int(512, 0, MAX_RESOLUTION), "height": _int(512, 0, MAX_RESOLUTION), "crop": (CROP_METHODS,),
        }}, ("IMAGE",), "image/upscaling", "Upscale Image"),
        NodeSchema("ImageScaleBy", {"required": {
            "image": ("IMAGE",), "upscale_method": (UPSCALE_METHODS,),
            "scale_by": _float(1.0, 0.01, 8.0, 0.01),
        }}, ("IMAGE",), "image/upscaling", "Upscale Image By"),
        NodeSchema("ImageInvert", {"required": {"image": ("IMAGE",)}}, ("IMAGE",), "image", "Invert Image"),
        NodeSchema("ImageBatch", {"required": {"image1": ("IMAGE",), "image2": ("IMAGE",)}}, ("IMAGE",), "image",
                   "Batch Images"),
        NodeSchema("EmptyImage", {"required": {
            "width": _int(512, 1, MAX_RESOLUTION), "height": _int(512, 1, MAX_RESOLUTION),
            "batch_size": _int(1, 1, 4096, None), "color": _int(0, 0, 0xFFFFFF, 1, display="color"),
        }}, ("IMAGE",), "image"),
        # Untooltipped, as in 0.3.64 (its "advanced" input flags came in 2026).
        NodeSchema("KSamplerAdvanced", {"required": {
            "model": ("MODEL",), "add_noise": (["enable", "disable"],),
            "noise_seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True}),
            "steps": ("INT", {"default": 20, "min": 1, "max": 10000}),
            "cfg": ("FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}),
            "sampler_name": (SAMPLERS,), "scheduler": (SCHEDULERS,),
            "positive": ("CONDITIONING",), "negative": ("CONDITIONING",), "latent_image": ("LATENT",),
            "start_at_step": ("INT", {"default": 0, "min": 0, "max": 10000}),
            "end_at_step": ("INT", {"default": 10000, "min": 0, "max": 10000}),
            "return_with_leftover_noise": (["disable", "enable"],),
        }}, ("LATENT",), "sampling", "KSampler (Advanced)"),
        NodeSchema(
            "LoraLoader",
            {"required": {
                "model": ("MODEL", {"tooltip": "The diffusion model the LoRA will be applied to."}),
                "clip": ("CLIP", {"tooltip": "The CLIP model the LoRA will be applied to."}),
                "lora_name": (catalog.files("loras"), {"tooltip": "The name of the LoRA."}),
                "strength_model": _float(1.0, -100.0, 100.0, 0.01, tooltip="How strongly to modify the diffusion "
                                         "model. This value can be negative."),
                "strength_clip": _float(1.0, -100.0, 100.0, 0.01, tooltip="How strongly to modify the CLIP model. "
                                        "This value can be negative."),
            }},
            ("MODEL", "CLIP"), "loaders", "Load LoRA",
            "LoRAs are used to modify diffusion and CLIP models, altering the way in which latents are denoised such "
            "as applying styles. Multiple LoRA nodes can be linked together.",
            output_tooltips=("The modified diffusion model.", "The modified CLIP model."),
        ),
        NodeSchema(
            "CLIPLoader",
            {"required": {"clip_name": (catalog.files("text_encoders"),), "type": (CLIP_TYPES,)},
             "optional": {"device": (["default", "cpu"], {"advanced": True})}},
            ("CLIP",), "advanced/loaders", "Load CLIP", _CLIP_RECIPES,
        ),
        NodeSchema("UNETLoader", {"required": {
            "unet_name": (catalog.files("diffusion_models"),), "weight_dtype": (WEIGHT_DTYPES,),
        }}, ("MODEL",), "advanced/loaders", "Load Diffusion Model"),
        NodeSchema(
            "ControlNetApplyAdvanced",
            {"required": {
                "positive": ("CONDITIONING",), "negative": ("CONDITIONING",), "control_net": ("CONTROL_NET",),
                "image": ("IMAGE",), "strength": _float(1.0, 0.0, 10.0, 0.01),
                "start_percent": _float(0.0, 0.0, 1.0, 0.001), "end_percent": _float(1.0, 0.0, 1.0, 0.001),
            }, "optional": {"vae": ("VAE",)}},
            ("CONDITIONING", "CONDITIONING"), "conditioning/controlnet", "Apply ControlNet",
            return_names=("positive", "negative"),
        ),
        NodeSchema("ControlNetLoader", {"required": {"control_net_name": (catalog.files("controlnet"),)}},
                   ("CONTROL_NET",), "loaders", "Load ControlNet Model"),
        NodeSchema("ImageCrop", {"required": {
            "image": ("IMAGE",), "width": _int(512, 1, MAX_RESOLUTION), "height": _int(512, 1, MAX_RESOLUTION),
            "x": _int(0, 0, MAX_RESOLUTION), "y": _int(0, 0, MAX_RESOLUTION),
        }}, ("IMAGE",), "image/transform", python_module="comfy_extras.nodes_images"),
        NodeSchema("UpscaleModelLoader", {"required": {"model_name": (catalog.files("upscale_models"),)}},
                   ("UPSCALE_MODEL",), "loaders", "Load Upscale Model", python_module=_UPSCALE_MODULE),
        NodeSchema("ImageUpscaleWithModel", {"required": {"upscale_model": ("UPSCALE_MODEL",), "image": ("IMAGE",)}},
                   ("IMAGE",), "image/upscaling", "Upscale Image (using Model)", python_module=_UPSCALE_MODULE),
        NodeSchema("ImageBlur", {"required": {
            "image": ("IMAGE",), "blur_radius": _int(1, 1, 31), "sigma": _float(1.0, 0.1, 10.0, 0.1),
        }}, ("IMAGE",), "image/postprocessing", python_module="comfy_extras.nodes_post_processing"),
        NodeSchema("ImageSharpen", {"required": {
            "image": ("IMAGE",), "sharpen_radius": _int(1, 1, 31), "sigma": _float(1.0, 0.1, 10.0, 0.01),
            "alpha": _float(1.0, 0.0, 5.0, 0.01),
        }}, ("IMAGE",), "image/postprocessing", python_module="comfy_extras.nodes_post_processing"),
        NodeSchema("SolidMask", {"required": {
            "value": _float(1.0, 0.0, 1.0, 0.01), "width": _int(512, 1, MAX_RESOLUTION),
            "height": _int(512, 1, MAX_RESOLUTION),
        }}, ("MASK",), "mask", python_module="comfy_extras.nodes_mask"),
        NodeSchema("PrimitiveInt", {"required": {"value": ("INT", {
            "min": -sys.maxsize, "max": sys.maxsize, "control_after_generate": True})}},
            ("INT",), "utils/primitive", "Int", python_module="comfy_extras.nodes_primitive"),
        NodeSchema("PrimitiveString", {"required": {"value": ("STRING", {})}}, ("STRING",), "utils/primitive",
                   "String", python_module="comfy_extras.nodes_primitive"),
        NodeSchema("StringConcatenate", {"required": {
            "string_a": ("STRING", {"multiline": True}), "string_b": ("STRING", {"multiline": True}),
            "delimiter": ("STRING", {"multiline": False, "default": ""}),
        }}, ("STRING",), "utils/string", "Concatenate", python_module="comfy_extras.nodes_string"),
        NodeSchema("PreviewAny", {"required": {"source": (ANY, {})}}, (), "utils", "Preview Any",
                   python_module="comfy_extras.nodes_preview_any", output_node=True),
        NodeSchema("TestSleep", {
            "required": {"value": (ANY, {}), "seconds": _float(1.0, 0.0, 9999.0, 0.01,
                                                                tooltip="The amount of seconds to sleep.")},
            "hidden": {"unique_id": "UNIQUE_ID"},
        }, (ANY,), "_for_testing", "Test Sleep", python_module="custom_nodes.testing-pack", is_async=True),
    ]  # fmt: skip
    schemas.extend(media_schemas(catalog))  # the save nodes of every output kind, and what feeds them
    return {schema.name: schema for schema in schemas}


def types_match(received: str, expected: Any) -> bool:
    """ComfyUI's ``validate_node_input`` (non-strict): equal, a wildcard, or overlapping comma-separated unions."""
    if received == expected:
        return True
    if not isinstance(received, str) or not isinstance(expected, str):
        return False
    if received == ANY or expected == ANY:
        return True
    got = {t.strip() for t in received.split(",")}
    want = {t.strip() for t in expected.split(",")}
    return bool(got & want)
