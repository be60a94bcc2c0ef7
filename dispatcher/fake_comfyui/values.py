"""The values that flow between simulated nodes, and how ComfyUI prints them in an ``execution_error``.

Real ComfyUI passes torch tensors; the fake passes small descriptions of solid-colour batches. When a node
fails, ComfyUI reports its inputs as ``str(value)``: for tensors that is torch's summarised repr, which
:func:`tensor_repr` reproduces so ``current_inputs`` look like the recording.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from dispatcher.fake_comfyui.png import RGB

# torch's default print options.
_EDGE_ITEMS = 3
_THRESHOLD = 1000
_LINE_WIDTH = 80
_PRECISION = 4


Pixel = tuple[float, float, float]
"""One colour as ComfyUI's IMAGE tensors hold it: three float32 channels in [0, 1]."""


@dataclass(frozen=True)
class Image:
    """IMAGE: a batch of solid-colour frames, all ``width`` x ``height`` (tensor [B, H, W, 3] of float32)."""

    width: int
    height: int
    colors: tuple[Pixel, ...]

    @property
    def batch(self) -> int:
        return len(self.colors)

    @property
    def pixels(self) -> int:
        return self.width * self.height * self.batch


@dataclass(frozen=True)
class Mask:
    """MASK: a batch of constant masks (tensor [B, H, W])."""

    width: int
    height: int
    values: tuple[float, ...]


@dataclass(frozen=True)
class Latent:
    """LATENT: ``{"samples": tensor [B, 4, H/8, W/8]}``; ``colors`` is what each item decodes to."""

    width: int
    height: int
    colors: tuple[RGB, ...]


@dataclass(frozen=True)
class ModelRef:
    """A loaded model (MODEL, CLIP, VAE, CONTROL_NET, UPSCALE_MODEL): the file it came from, nothing more."""

    kind: str
    name: str


@dataclass(frozen=True)
class Conditioning:
    """CONDITIONING: the encoded text."""

    text: str


_MODEL_CLASSES = {
    "MODEL": "comfy.model_patcher.ModelPatcher",
    "CLIP": "comfy.sd.CLIP",
    "VAE": "comfy.sd.VAE",
    "CONTROL_NET": "comfy.controlnet.ControlNet",
    "UPSCALE_MODEL": "spandrel.__helpers.model_descriptor.ImageModelDescriptor",
}


def _f32(value: float) -> float:
    """The value as torch stores it (float32), so rounding to 4 decimals matches torch's output."""
    result: float = struct.unpack("f", struct.pack("f", value))[0]
    return result


def from_rgb8(color: RGB) -> Pixel:
    """8-bit channels as ComfyUI loads them: ``torch.full(..., c / 0xFF)`` and ``np.float32(c) / 255.0``."""
    r, g, b = (_f32(c / 255.0) for c in color)
    return (r, g, b)


def to_rgb8(pixel: Pixel) -> RGB:
    """What SaveImage writes: ``np.clip(255. * i, 0, 255).astype(np.uint8)``, float32 maths, truncated.

    Truncation is why a real ComfyUI saves ``c8854d``, not ``c8864e``, for the inverse of ``0x3779b1``.
    """
    r, g, b = (int(min(max(_f32(255.0 * c), 0.0), 255.0)) for c in pixel)
    return (r, g, b)


def invert(pixel: Pixel) -> Pixel:
    """ImageInvert: ``1.0 - image`` in float32."""
    r, g, b = (_f32(1.0 - c) for c in pixel)
    return (r, g, b)


def inverted_rgb8(color: int) -> RGB:
    """The colour a real ComfyUI saves for ``EmptyImage(color=0xRRGGBB)`` through ``ImageInvert``."""
    return to_rgb8(invert(from_rgb8(((color >> 16) & 0xFF, (color >> 8) & 0xFF, color & 0xFF))))


class _Formatter:
    """torch._tensor_str._Formatter for floating tensors."""

    def __init__(self, values: Sequence[float]) -> None:
        self.int_mode = True
        self.sci_mode = False
        self.max_width = 1
        nonzero = [v for v in values if v != 0 and math.isfinite(v)]
        if not nonzero:
            return
        abs_min = min(abs(v) for v in nonzero)
        abs_max = max(abs(v) for v in nonzero)
        self.int_mode = all(v == math.ceil(v) for v in nonzero)
        if self.int_mode:
            self.sci_mode = abs_max / abs_min > 1000.0 or abs_max > 1.0e8
        else:
            self.sci_mode = abs_max / abs_min > 1000.0 or abs_max > 1.0e8 or abs_min < 1.0e-4
        for v in nonzero:
            self.max_width = max(self.max_width, len(self._raw(v)))

    def _raw(self, value: float) -> str:
        if self.sci_mode:
            return f"{value:.{_PRECISION}e}"
        if self.int_mode:
            return f"{value:.0f}" + ("." if math.isfinite(value) else "")
        return f"{value:.{_PRECISION}f}"

    def format(self, value: float) -> str:
        text = self._raw(value)
        return " " * (self.max_width - len(text)) + text


def _shown(size: int, summarize: bool) -> list[int | None]:
    """Indices torch prints along one dimension; ``None`` stands for the ``...`` gap."""
    if summarize and size > 2 * _EDGE_ITEMS:
        return [*range(_EDGE_ITEMS), None, *range(size - _EDGE_ITEMS, size)]
    return list(range(size))


def tensor_repr(shape: Sequence[int], value: Callable[[tuple[int, ...]], float]) -> str:
    """``repr(tensor)`` for a float tensor of ``shape`` whose element at an index is ``value(index)``."""
    summarize = math.prod(shape) > _THRESHOLD

    def indices(prefix: tuple[int, ...]) -> list[tuple[int, ...]]:
        if len(prefix) == len(shape):
            return [prefix]
        out: list[tuple[int, ...]] = []
        for i in _shown(shape[len(prefix)], summarize):
            if i is not None:
                out.extend(indices((*prefix, i)))
        return out

    formatter = _Formatter([value(index) for index in indices(())])

    def render(prefix: tuple[int, ...], indent: int) -> str:
        dim = len(shape) - len(prefix)
        if dim == 1:
            shown = _shown(shape[-1], summarize)
            items = [" ..." if i is None else formatter.format(value((*prefix, i))) for i in shown]
            per_line = max(1, (_LINE_WIDTH - indent) // (formatter.max_width + 2))
            lines = [", ".join(items[i : i + per_line]) for i in range(0, len(items), per_line)]
            return "[" + (",\n" + " " * (indent + 1)).join(lines) + "]"
        slices = [
            "..." if i is None else render((*prefix, i), indent + 1) for i in _shown(shape[len(prefix)], summarize)
        ]
        return "[" + ("," + "\n" * (dim - 1) + " " * (indent + 1)).join(slices) + "]"

    return "tensor(" + render((), len("tensor(")) + ")"


def image_repr(image: Image) -> str:
    return tensor_repr((image.batch, image.height, image.width, 3), lambda i: image.colors[i[0]][i[3]])


def mask_repr(mask: Mask) -> str:
    return tensor_repr((len(mask.values), mask.height, mask.width), lambda i: _f32(mask.values[i[0]]))


def latent_repr(latent: Latent) -> str:
    shape = (len(latent.colors), 4, latent.height, latent.width)
    return "{'samples': " + tensor_repr(shape, lambda i: 0.0) + "}"


def format_value(value: Any) -> Any:
    """How ComfyUI reports one input value of a failed node: JSON scalars as they are, the rest as ``str``."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Image):
        return image_repr(value)
    if isinstance(value, Mask):
        return mask_repr(value)
    if isinstance(value, Latent):
        return latent_repr(value)
    if isinstance(value, ModelRef):
        # id() stands in for the memory address CPython would print.
        return f"<{_MODEL_CLASSES.get(value.kind, 'object')} object at {hex(id(value))}>"
    if isinstance(value, Conditioning):
        cond = tensor_repr((1, 77, 768), lambda i: 0.0)
        pooled = tensor_repr((1, 768), lambda i: 0.0)
        return f"[[{cond}, {{'pooled_output': {pooled}}}]]"
    return str(value)
