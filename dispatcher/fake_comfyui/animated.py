"""Animated images of solid-colour frames, written as real containers: WEBP (lossless VP8L), APNG and GIF.

Standard library only, like :mod:`dispatcher.fake_comfyui.png`. What ComfyUI 0.3.64 writes through Pillow:
``SaveAnimatedWEBP`` an animated WEBP (a single frame: a still one), ``SaveAnimatedPNG`` an APNG,
VideoHelperSuite's ``image/gif`` a looping GIF. Like Pillow (and libwebp's animation encoder), a frame identical
to the one before is not written again: the earlier frame's duration grows instead.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from dispatcher.fake_comfyui.png import PNG_SIGNATURE, RGB, _chunk, encode_solid_png


def merge_frames(colors: Sequence[RGB], duration_ms: int) -> list[tuple[RGB, int]]:
    """(colour, duration) per written frame: runs of identical frames become one, their durations summed."""
    frames: list[tuple[RGB, int]] = []
    for color in colors:
        if frames and frames[-1][0] == color:
            frames[-1] = (color, frames[-1][1] + duration_ms)
        else:
            frames.append((color, duration_ms))
    return frames


# -- WEBP ------------------------------------------------------------------------------------------------------


class LsbBits:
    """Bits packed least significant first (VP8L, GIF's LZW codes)."""

    def __init__(self) -> None:
        self.value = 0
        self.count = 0

    def put(self, value: int, width: int) -> None:
        self.value |= (value & ((1 << width) - 1)) << self.count
        self.count += width

    def to_bytes(self) -> bytes:
        return self.value.to_bytes((self.count + 7) // 8, "little")


def vp8l_solid(width: int, height: int, color: RGB) -> bytes:
    """A lossless VP8L bitstream of one colour: each of its five prefix codes has a single symbol, so a pixel
    costs no bits at all (libwebp decodes such codes as zero-length)."""
    bits = LsbBits()
    bits.put(0x2F, 8)  # signature
    bits.put(width - 1, 14)
    bits.put(height - 1, 14)
    bits.put(0, 1)  # alpha_is_used
    bits.put(0, 3)  # version
    bits.put(0, 1)  # no transform
    bits.put(0, 1)  # no colour cache
    bits.put(0, 1)  # no meta prefix codes
    r, g, b = color
    for symbol in (g, r, b, 0xFF):  # green, red, blue, alpha: one 8-bit symbol each
        bits.put(1, 1)  # simple code
        bits.put(0, 1)  # one symbol
        bits.put(1, 1)  # it is 8 bits long
        bits.put(symbol, 8)
    bits.put(1, 1)  # distance code: simple, one 1-bit symbol, 0
    bits.put(0, 1)
    bits.put(0, 1)
    bits.put(0, 1)
    return bits.to_bytes()


def _riff_chunk(fourcc: bytes, data: bytes) -> bytes:
    return fourcc + struct.pack("<I", len(data)) + data + (b"\x00" if len(data) % 2 else b"")


def _u24(value: int) -> bytes:
    return value.to_bytes(3, "little")


def encode_webp(width: int, height: int, colors: Sequence[RGB], duration_ms: int, loop: int = 0) -> bytes:
    """A WEBP of the frames: animated (VP8X, ANIM, one ANMF per written frame) unless there is a single input
    frame, which Pillow writes as a still lossless WEBP."""
    if width < 1 or height < 1 or width > 16384 or height > 16384:
        raise ValueError(f"WEBP size must be 1..16384, got {width}x{height}")
    if len(colors) == 1:
        body = _riff_chunk(b"VP8L", vp8l_solid(width, height, colors[0]))
    else:
        vp8x = bytes((0x02, 0, 0, 0)) + _u24(width - 1) + _u24(height - 1)  # flags: animation
        anim = struct.pack("<IH", 0, loop)  # background colour (BGRA), loop count (0: forever)
        chunks = [_riff_chunk(b"VP8X", vp8x), _riff_chunk(b"ANIM", anim)]
        for color, duration in merge_frames(colors, duration_ms):
            header = _u24(0) + _u24(0) + _u24(width - 1) + _u24(height - 1) + _u24(min(duration, 0xFFFFFF))
            frame = _riff_chunk(b"VP8L", vp8l_solid(width, height, color))
            chunks.append(_riff_chunk(b"ANMF", header + b"\x00" + frame))
        body = b"".join(chunks)
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body


# -- APNG -------------------------------------------------------------------------------------------------------


def encode_apng(
    width: int, height: int, colors: Sequence[RGB], duration_ms: int, *, text: dict[str, str], level: int
) -> bytes:
    """An APNG of the frames (acTL, then fcTL + IDAT, fcTL + fdAT...), playing forever; ``text`` as ComfyUI
    stores it for animated PNGs: ``comf`` chunks after the image data."""
    frames = merge_frames(colors, duration_ms)
    chunks = [PNG_SIGNATURE, _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))]
    chunks.append(_chunk(b"acTL", struct.pack(">II", len(frames), 0)))
    sequence = 0
    for index, (color, duration) in enumerate(frames):
        fctl = struct.pack(">IIIIIHHBB", sequence, width, height, 0, 0, min(duration, 0xFFFF), 1000, 0, 0)
        chunks.append(_chunk(b"fcTL", fctl))
        sequence += 1
        data = _idat(encode_solid_png(width, height, color, compress_level=level))
        if index == 0:
            chunks.append(_chunk(b"IDAT", data))
        else:
            chunks.append(_chunk(b"fdAT", struct.pack(">I", sequence) + data))
            sequence += 1
    for key, value in text.items():
        chunks.append(_chunk(b"comf", key.encode("latin-1", "replace") + b"\x00" + value.encode("latin-1", "replace")))
    chunks.append(_chunk(b"IEND", b""))
    return b"".join(chunks)


def _idat(png: bytes) -> bytes:
    """The compressed image data of a PNG written by :func:`encode_solid_png` (one IDAT chunk)."""
    start = png.index(b"IDAT")
    (length,) = struct.unpack(">I", png[start - 4 : start])
    return png[start + 4 : start + 4 + length]


# -- GIF ---------------------------------------------------------------------------------------------------------


def lzw_encode(indices: bytes, min_code_size: int) -> bytes:
    """GIF's variable-width LZW of palette indices (codes widen as the decoder's table fills; clear at 4096)."""
    clear, end = 1 << min_code_size, (1 << min_code_size) + 1
    bits = LsbBits()
    size = min_code_size + 1
    bits.put(clear, size)
    table: dict[tuple[int, int], int] = {}
    next_code = end + 1
    current = indices[0]
    for index in indices[1:]:
        found = table.get((current, index))
        if found is not None:
            current = found
            continue
        bits.put(current, size)
        if next_code == 4096:
            bits.put(clear, size)
            table, next_code, size = {}, end + 1, min_code_size + 1
        else:
            if next_code >= 1 << size:
                size += 1
            table[(current, index)] = next_code
            next_code += 1
        current = index
    bits.put(current, size)
    bits.put(end, size)
    return bits.to_bytes()


def _sub_blocks(data: bytes) -> bytes:
    blocks = [bytes((len(data[i : i + 255]),)) + data[i : i + 255] for i in range(0, len(data), 255)]
    return b"".join(blocks) + b"\x00"


def encode_gif(width: int, height: int, colors: Sequence[RGB], duration_ms: int, loop: int = 0) -> bytes:
    """A GIF89a of the frames, one global palette, each frame wholly redrawn (disposal 2, as VideoHelperSuite
    asks Pillow for), looping ``loop`` times (0: forever)."""
    frames = merge_frames(colors, duration_ms)
    palette = list(dict.fromkeys(color for color, _ in frames))
    bits = max(1, (len(palette) - 1).bit_length())  # the table holds 2**bits colours
    table = b"".join(bytes(c) for c in palette) + b"\x00\x00\x00" * ((1 << bits) - len(palette))
    out = [b"GIF89a", struct.pack("<HHBBB", width, height, 0xF0 | (bits - 1), 0, 0), table]
    out.append(b"\x21\xff\x0bNETSCAPE2.0\x03\x01" + struct.pack("<H", loop) + b"\x00")
    min_code_size = max(2, bits)
    for color, duration in frames:
        delay = min(round(duration / 10), 0xFFFF)  # hundredths of a second
        out.append(b"\x21\xf9\x04" + struct.pack("<BHB", 2 << 2, delay, 0) + b"\x00")
        out.append(b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0))
        pixels = bytes((palette.index(color),)) * (width * height)
        out.append(bytes((min_code_size,)) + _sub_blocks(lzw_encode(pixels, min_code_size)))
    out.append(b"\x3b")
    return b"".join(out)
