"""Write solid-colour PNG files and read the little the fake needs back from any PNG.

Standard library only (zlib + struct): product code must not depend on Pillow.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

RGB = tuple[int, int, int]

# Colour types of the PNG spec -> samples per pixel.
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


class PngError(ValueError):
    """Raised when bytes are not a PNG the reader understands."""


@dataclass(frozen=True)
class PngInfo:
    """Size and the colour of the top-left pixel (the fake's images are solid, so that is their colour)."""

    width: int
    height: int
    color: RGB
    has_alpha: bool
    alpha: int = 255


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_solid_png(
    width: int, height: int, color: RGB, *, text: dict[str, str] | None = None, compress_level: int = 4
) -> bytes:
    """An 8-bit RGB PNG of ``width`` x ``height`` filled with ``color``; ``text`` becomes tEXt chunks.

    Rows are fed to the compressor one at a time so a 4096x4096 image never sits uncompressed in memory.
    """
    if width < 1 or height < 1:
        raise ValueError(f"PNG size must be positive, got {width}x{height}")
    r, g, b = (max(0, min(255, int(c))) for c in color)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    row = b"\x00" + bytes((r, g, b)) * width  # filter type 0 (None) on every row
    compressor = zlib.compressobj(compress_level)
    parts = [compressor.compress(row) for _ in range(height)]
    parts.append(compressor.flush())
    chunks = [PNG_SIGNATURE, _chunk(b"IHDR", header)]
    for key, value in (text or {}).items():
        chunks.append(_chunk(b"tEXt", key.encode("latin-1", "replace") + b"\x00" + value.encode("latin-1", "replace")))
    chunks.append(_chunk(b"IDAT", b"".join(parts)))
    chunks.append(_chunk(b"IEND", b""))
    return b"".join(chunks)


def read_png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the IHDR chunk."""
    if not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        raise PngError("not a PNG file")
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def read_png_info(data: bytes) -> PngInfo:
    """Size and top-left pixel colour of an 8- or 16-bit PNG (any colour type, non-interlaced or not).

    Only the first pixel is decoded: every PNG row filter leaves the first pixel of the first row
    unchanged (its left and upper neighbours are zero), so no unfiltering is needed.
    """
    width, height = read_png_size(data)
    bit_depth, color_type = data[24], data[25]
    if color_type not in _CHANNELS or bit_depth not in (1, 2, 4, 8, 16):
        raise PngError(f"unsupported PNG colour type {color_type} / bit depth {bit_depth}")
    palette = b""
    idat = bytearray()
    pos = 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"PLTE":
            palette = body
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
        pos += 12 + length
    try:
        raw = zlib.decompressobj().decompress(bytes(idat), 16)
    except zlib.error as exc:
        raise PngError(f"corrupt PNG data: {exc}") from exc
    channels = _CHANNELS[color_type]
    sample_bytes = 2 if bit_depth == 16 else 1
    first = raw[1 : 1 + channels * sample_bytes]  # skip the row's filter-type byte
    if len(first) < (channels * sample_bytes if bit_depth >= 8 else 1):
        raise PngError("truncated PNG data")
    if bit_depth < 8:
        # Sub-byte samples: the first pixel is the top bits of the first byte, scaled to 0..255.
        value = first[0] >> (8 - bit_depth)
        if color_type == 3:
            r, g, b = palette[value * 3 : value * 3 + 3]
            return PngInfo(width, height, (r, g, b), has_alpha=False)
        grey = value * 255 // ((1 << bit_depth) - 1)
        return PngInfo(width, height, (grey, grey, grey), has_alpha=False)
    samples = [first[i * sample_bytes] for i in range(channels)]  # high byte of 16-bit samples
    if color_type == 3:
        index = samples[0]
        r, g, b = palette[index * 3 : index * 3 + 3]
        return PngInfo(width, height, (r, g, b), has_alpha=False)
    if color_type in (0, 4):
        alpha = samples[1] if color_type == 4 else 255
        grey = samples[0]
        return PngInfo(width, height, (grey, grey, grey), has_alpha=color_type == 4, alpha=alpha)
    alpha = samples[3] if color_type == 6 else 255
    return PngInfo(width, height, (samples[0], samples[1], samples[2]), has_alpha=color_type == 6, alpha=alpha)


def read_jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a JPEG's first start-of-frame marker (uploads may be JPEGs)."""
    if not data.startswith(b"\xff\xd8"):
        raise PngError("not a JPEG file")
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            pos += 1
            continue
        marker = data[pos + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return int(width), int(height)
        pos += 2 + length
    raise PngError("no frame header in JPEG")
