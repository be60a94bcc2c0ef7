"""Pure parts of the fake: PNG writer/reader, torch-like reprs, tracebacks (no server, no sockets)."""

from __future__ import annotations

import io

import pytest
from fake_comfy_helpers import transcript
from PIL import Image as PILImage

from dispatcher.fake_comfyui.failures import (
    EXECUTION_FRAMES,
    OOM_TIPS,
    SAVE_OUTSIDE_FRAMES,
    NodeFailure,
    injected,
)
from dispatcher.fake_comfyui.png import PngError, encode_solid_png, read_jpeg_size, read_png_info, read_png_size
from dispatcher.fake_comfyui.values import (
    Image,
    Latent,
    Mask,
    format_value,
    from_rgb8,
    image_repr,
    inverted_rgb8,
    tensor_repr,
    to_rgb8,
)


@pytest.mark.parametrize(
    ("width", "height", "color"),
    [(1, 1, (0, 0, 0)), (64, 64, (255, 0, 0)), (3, 7, (0, 255, 255)), (513, 2, (12, 34, 56))],
)
def test_solid_png_decodes_to_its_size_and_colour(width: int, height: int, color: tuple[int, int, int]) -> None:
    data = encode_solid_png(width, height, color, text={"prompt": "{}"})
    assert read_png_size(data) == (width, height)
    info = read_png_info(data)
    assert (info.width, info.height, info.color, info.has_alpha) == (width, height, color, False)
    with PILImage.open(io.BytesIO(data)) as decoded:  # an independent decoder agrees on every pixel
        assert decoded.mode == "RGB" and decoded.size == (width, height)
        assert decoded.getcolors() == [(width * height, color)]
        assert decoded.info["prompt"] == "{}"


@pytest.mark.parametrize(
    ("mode", "pixel", "expected", "alpha"),
    [
        ("RGB", (10, 20, 30), (10, 20, 30), None),
        ("RGBA", (10, 20, 30, 64), (10, 20, 30), 64),
        ("L", 77, (77, 77, 77), None),
        ("LA", (77, 200), (77, 77, 77), 200),
        ("I;16", 0x4000, (0x40, 0x40, 0x40), None),
    ],
)
def test_png_reader_reads_first_pixel_of_other_encoders(
    mode: str, pixel: object, expected: object, alpha: object
) -> None:
    buffer = io.BytesIO()
    PILImage.new(mode, (9, 5), pixel).save(buffer, format="PNG")  # type: ignore[arg-type]
    info = read_png_info(buffer.getvalue())
    assert (info.width, info.height, info.color) == (9, 5, expected)
    assert info.has_alpha == (alpha is not None)
    if alpha is not None:
        assert info.alpha == alpha


def test_png_reader_handles_palette_images() -> None:
    buffer = io.BytesIO()
    PILImage.new("RGB", (4, 4), (200, 100, 50)).convert("P").save(buffer, format="PNG")
    with PILImage.open(io.BytesIO(buffer.getvalue())) as decoded:
        expected = decoded.convert("RGB").getpixel((0, 0))
    assert read_png_info(buffer.getvalue()).color == expected


@pytest.mark.parametrize("data", [b"", b"GIF89a....", b"\x89PNG\r\n\x1a\n" + b"\x00" * 8])
def test_png_reader_rejects_non_png(data: bytes) -> None:
    with pytest.raises(PngError):
        read_png_info(data)


def test_jpeg_size() -> None:
    buffer = io.BytesIO()
    PILImage.new("RGB", (33, 21), (1, 2, 3)).save(buffer, format="JPEG")
    assert read_jpeg_size(buffer.getvalue()) == (33, 21)


@pytest.mark.parametrize(("width", "height"), [(0, 1), (1, 0)])
def test_png_size_must_be_positive(width: int, height: int) -> None:
    with pytest.raises(ValueError):
        encode_solid_png(width, height, (0, 0, 0))


def test_image_repr_is_torch_repr_of_the_recording() -> None:
    error = transcript("runtime_error")["ws_messages"][-1]["data"]
    assert image_repr(Image(64, 64, (from_rgb8((0, 0, 0)),))) == error["current_inputs"]["images"][0]


@pytest.mark.parametrize(
    ("shape", "value", "expected"),
    [
        ((3,), 0.0, "tensor([0., 0., 0.])"),
        ((2,), 1.0, "tensor([1., 1.])"),
        ((2,), 0.5, "tensor([0.5000, 0.5000])"),
        ((1, 2), 12.0, "tensor([[12., 12.]])"),
        ((1001,), 0.0, "tensor([0., 0., 0.,  ..., 0., 0., 0.])"),
    ],
)
def test_tensor_repr_follows_torch_print_options(shape: tuple[int, ...], value: float, expected: str) -> None:
    assert tensor_repr(shape, lambda index: value) == expected


@pytest.mark.parametrize(
    ("color", "saved"),
    [
        # recorded from a real ComfyUI 0.3.64: float32 maths, truncated on save (not 0xc8864e)
        (0x3779B1, (0xC8, 0x85, 0x4D)),
        (0xFF0000, (0x00, 0xFF, 0xFF)),
        (0x000000, (0xFF, 0xFF, 0xFF)),
    ],
)
def test_invert_is_float32_and_saving_truncates(color: int, saved: tuple[int, int, int]) -> None:
    assert inverted_rgb8(color) == saved


@pytest.mark.parametrize("channel", range(256))
def test_an_8_bit_colour_survives_load_and_save(channel: int) -> None:
    assert to_rgb8(from_rgb8((channel, 255 - channel, channel // 2))) == (channel, 255 - channel, channel // 2)


def test_mixed_values_use_four_decimals() -> None:
    text = image_repr(Image(1, 1, (from_rgb8((255, 0, 0)), from_rgb8((16, 32, 200)))))
    assert text == "tensor([[[[1.0000, 0.0000, 0.0000]]],\n\n\n        [[[0.0627, 0.1255, 0.7843]]]])"


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), (3, 3), (2.5, 2.5), ("x", "x"), (True, True), ({"a": 1}, "{'a': 1}")],
)
def test_format_value_keeps_json_scalars(value: object, expected: object) -> None:
    assert format_value(value) == expected


def test_format_value_prints_tensors() -> None:
    assert format_value(Mask(2, 1, (1.0,))) == "tensor([[[1., 1.]]])"
    assert format_value(Latent(1, 1, ((0, 0, 0),))).startswith("{'samples': tensor([[[[0.]]")


def test_save_outside_traceback_is_the_recorded_one() -> None:
    error = transcript("runtime_error")["ws_messages"][-1]["data"]
    assert [*EXECUTION_FRAMES, *SAVE_OUTSIDE_FRAMES] == error["traceback"]


@pytest.mark.parametrize(
    ("kind", "message", "expected"),
    [("RuntimeError", "boom", "boom\n"), ("torch.OutOfMemoryError", "oom", f"oom\n{OOM_TIPS}")],
)
def test_exception_message_gets_tips_only_for_oom(kind: str, message: str, expected: str) -> None:
    failure = injected("KSampler", "sample", kind, message)
    assert isinstance(failure, NodeFailure)
    assert failure.exception_message == expected
    assert failure.traceback[: len(EXECUTION_FRAMES)] == list(EXECUTION_FRAMES)
    assert failure.traceback[-1].startswith('  File "/opt/ComfyUI/nodes.py", line 1, in sample\n')
