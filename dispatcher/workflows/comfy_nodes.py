"""What parameter inference knows of ComfyUI's own nodes, for graphs read without node definitions.

Values are ComfyUI 0.3.64's (``nodes.py``, ``comfy/samplers.py``, ``comfy_extras/``). Where a ComfyUI's node
definitions (``/object_info``) are given, inference reads types, ranges and choices from them instead.
"""

from __future__ import annotations

from dataclasses import dataclass

SAMPLERS = (
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2", "dpm_2",
    "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral", "dpmpp_2s_ancestral_cfg_pp",
    "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu",
    "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm",
    "ipndm_v", "deis", "res_multistep", "res_multistep_cfg_pp", "res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp", "gradient_estimation", "gradient_estimation_cfg_pp", "er_sde", "seeds_2",
    "seeds_3", "sa_solver", "sa_solver_pece", "ddim", "uni_pc", "uni_pc_bh2",
)  # fmt: skip
"""``comfy.samplers.KSampler.SAMPLERS``."""

SCHEDULERS = (
    "simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal", "linear_quadratic",
    "kl_optimal",
)  # fmt: skip
"""``comfy.samplers.KSampler.SCHEDULERS``."""

SEED_MAX = 0xFFFFFFFFFFFFFFFF
MAX_RESOLUTION = 16384


@dataclass(frozen=True)
class Role:
    """What a kind of input becomes as a parameter: its name, type, range or choices, and what it means."""

    name: str
    type: str
    label: str
    min: int | float | None = None
    max: int | float | None = None
    choices: tuple[str, ...] | None = None


SAMPLER_INPUTS = {
    "seed": Role("seed", "int", "noise seed", 0, SEED_MAX),
    "noise_seed": Role("seed", "int", "noise seed", 0, SEED_MAX),
    "steps": Role("steps", "int", "sampling steps", 1, 10000),
    "cfg": Role("cfg", "float", "classifier-free guidance scale", 0.0, 100.0),
    "sampler_name": Role("sampler", "enum", "sampling algorithm", choices=SAMPLERS),
    "scheduler": Role("scheduler", "enum", "noise schedule", choices=SCHEDULERS),
    "denoise": Role("denoise", "float", "denoising strength: 1 redraws the whole image", 0.0, 1.0),
}
"""Inputs of sampling nodes (samplers, guiders, noise, sampler and scheduler pickers) that become parameters."""

LATENT_INPUTS = {
    "width": Role("width", "int", "image width in pixels", 16, MAX_RESOLUTION),
    "height": Role("height", "int", "image height in pixels", 16, MAX_RESOLUTION),
    "batch_size": Role("batch_size", "int", "images per run", 1, 4096),
}
"""Inputs of empty-latent nodes that become parameters."""

SAMPLING_CLASSES = frozenset(
    {
        "KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced", "RandomNoise", "KSamplerSelect",
        "CFGGuider", "DualCFGGuider", "BasicGuider", "BasicScheduler", "KarrasScheduler", "ExponentialScheduler",
        "PolyexponentialScheduler", "LaplaceScheduler", "VPScheduler", "BetaSamplingScheduler", "SDTurboScheduler",
        "AlignYourStepsScheduler", "GITSScheduler", "OptimalStepsScheduler",
    }
)  # fmt: skip

CONDITIONING_CONSUMERS: dict[str, dict[str, str]] = {
    "KSampler": {"positive": "positive", "negative": "negative"},
    "KSamplerAdvanced": {"positive": "positive", "negative": "negative"},
    "SamplerCustom": {"positive": "positive", "negative": "negative"},
    "CFGGuider": {"positive": "positive", "negative": "negative"},
    "DualCFGGuider": {"cond1": "positive", "cond2": "positive", "negative": "negative"},
    "BasicGuider": {"conditioning": "positive"},
}
"""Where conditioning ends: the inputs of samplers and guiders, and which prompt (positive, negative) each takes."""

NOT_FOLLOWED = frozenset({"ConditioningZeroOut"})
"""Conditioning nodes whose output does not depend on the text behind them (Flux's empty negative)."""

TEXT_INPUTS: dict[str, tuple[str, ...]] = {
    "CLIPTextEncode": ("text",),
    "CLIPTextEncodeSDXL": ("text_g", "text_l"),
    "CLIPTextEncodeSDXLRefiner": ("text",),
    "CLIPTextEncodeSD3": ("clip_l", "clip_g", "t5xxl"),
    "CLIPTextEncodeFlux": ("clip_l", "t5xxl"),
    "CLIPTextEncodeHunyuanDiT": ("bert", "mt5xl"),
    "CLIPTextEncodePixArtAlpha": ("text",),
    "CLIPTextEncodeLumina2": ("user_prompt",),
    "TextEncodeHunyuanVideo_ImageToVideo": ("prompt",),
    "TextEncodeQwenImageEdit": ("prompt",),
    "TextEncodeQwenImageEditPlus": ("prompt",),
}
"""The prompt inputs of ComfyUI's text encoders; a node not listed counts as one when it has a ``text`` or
``prompt`` input holding a string."""
FALLBACK_TEXT_INPUTS = ("text", "prompt")

PRIMITIVE_CLASSES = frozenset(
    {"PrimitiveInt", "PrimitiveFloat", "PrimitiveString", "PrimitiveStringMultiline", "PrimitiveBoolean"}
)
"""Nodes whose ``value`` input a link may be followed to: the parameter is written there."""

IMAGE_LOADERS = {"LoadImage": ("image", "image"), "LoadImageMask": ("image", "mask")}
"""class -> (input, parameter name) of the nodes that read an input image."""

FOLDER_PARAMS = {
    "checkpoints": "checkpoint",
    "diffusion_models": "diffusion_model",
    "loras": "lora",
    "vae": "vae",
    "text_encoders": "text_encoder",
    "clip_vision": "clip_vision",
    "controlnet": "controlnet",
    "upscale_models": "upscale_model",
    "style_models": "style_model",
    "gligen": "gligen",
    "hypernetworks": "hypernetwork",
}
"""The parameter name of a loader input, by the model folder it reads (see ``routing.capabilities.KNOWN_LOADERS``)."""


def is_latent_class(class_type: str) -> bool:
    """EmptyLatentImage, EmptySD3LatentImage, EmptyHunyuanLatentVideo...: the nodes that make an empty latent."""
    return class_type.startswith("Empty") and "Latent" in class_type
