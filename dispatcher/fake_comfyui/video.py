"""Small real MP4 videos of solid-colour frames: H.264 (Constrained Baseline) in an ISO BMFF container.

Standard library only. Every frame is an IDR picture whose macroblocks are all ``I_PCM`` (raw samples, no
transform or prediction), which any H.264 decoder plays; the container is what ``ffprobe`` expects of an MP4
(``ftyp``, ``mdat``, then ``moov`` with one ``avc1`` track). What ComfyUI 0.3.64's ``SaveVideo`` (PyAV, libx264)
and VideoHelperSuite's ``video/h264-mp4`` (ffmpeg) write is the same kind of file, only better compressed.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from fractions import Fraction

from dispatcher.fake_comfyui.png import RGB


class MsbBits:
    """Bits packed most significant first, with H.264's Exp-Golomb codes."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.value = 0
        self.count = 0

    def put(self, value: int, width: int) -> None:
        for shift in range(width - 1, -1, -1):
            self.value = (self.value << 1) | ((value >> shift) & 1)
            self.count += 1
            if self.count == 8:
                self.data.append(self.value)
                self.value, self.count = 0, 0

    def ue(self, value: int) -> None:
        code = value + 1
        self.put(0, code.bit_length() - 1)
        self.put(code, code.bit_length())

    def se(self, value: int) -> None:
        self.ue(2 * value - 1 if value > 0 else -2 * value)

    def align_zero(self) -> None:
        if self.count:
            self.put(0, 8 - self.count)

    def trailing(self) -> bytes:
        """rbsp_trailing_bits: a stop bit, then zeros to the byte boundary."""
        self.put(1, 1)
        self.align_zero()
        return bytes(self.data)


def _nal(header: int, rbsp: bytes) -> bytes:
    """A NAL unit: its header byte and the payload with emulation prevention (00 00 0x becomes 00 00 03 0x)."""
    out = bytearray((header,))
    zeros = 0
    for byte in rbsp:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def yuv(color: RGB) -> tuple[int, int, int]:
    """BT.601 limited-range Y'CbCr of an sRGB colour, as libswscale converts rgb24 to yuv420p by default."""
    r, g, b = color
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    cb = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    cr = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    return tuple(max(0, min(255, round(v))) for v in (y, cb, cr))  # type: ignore[return-value]


PROFILE_BASELINE = 66
CONSTRAINTS = 0xC0  # constraint_set0 and set1: Constrained Baseline


def _level(macroblocks: int) -> int:
    return 30 if macroblocks <= 1620 else 40 if macroblocks <= 8192 else 51


def sps(width: int, height: int) -> bytes:
    mbs_w, mbs_h = (width + 15) // 16, (height + 15) // 16
    bits = MsbBits()
    for value in (PROFILE_BASELINE, CONSTRAINTS, _level(mbs_w * mbs_h)):
        bits.put(value, 8)
    bits.ue(0)  # seq_parameter_set_id
    bits.ue(0)  # log2_max_frame_num_minus4
    bits.ue(2)  # pic_order_cnt_type 2: output order is decoding order
    bits.ue(0)  # max_num_ref_frames: every picture is intra
    bits.put(0, 1)  # gaps_in_frame_num_value_allowed_flag
    bits.ue(mbs_w - 1)
    bits.ue(mbs_h - 1)
    bits.put(1, 1)  # frame_mbs_only_flag
    bits.put(1, 1)  # direct_8x8_inference_flag
    crop_right, crop_bottom = (mbs_w * 16 - width) // 2, (mbs_h * 16 - height) // 2  # 4:2:0: units of 2 pixels
    bits.put(1 if crop_right or crop_bottom else 0, 1)
    if crop_right or crop_bottom:
        for offset in (0, crop_right, 0, crop_bottom):
            bits.ue(offset)
    bits.put(0, 1)  # no VUI: timing comes from the container
    return _nal(0x67, bits.trailing())


def pps() -> bytes:
    bits = MsbBits()
    bits.ue(0)  # pic_parameter_set_id
    bits.ue(0)  # seq_parameter_set_id
    bits.put(0, 1)  # CAVLC
    bits.put(0, 1)  # bottom_field_pic_order_in_frame_present_flag
    bits.ue(0)  # num_slice_groups_minus1
    bits.ue(0)  # num_ref_idx_l0_default_active_minus1
    bits.ue(0)  # num_ref_idx_l1_default_active_minus1
    bits.put(0, 1)  # weighted_pred_flag
    bits.put(0, 2)  # weighted_bipred_idc
    bits.se(0)  # pic_init_qp_minus26
    bits.se(0)  # pic_init_qs_minus26
    bits.se(0)  # chroma_qp_index_offset
    bits.put(0, 1)  # deblocking_filter_control_present_flag
    bits.put(0, 1)  # constrained_intra_pred_flag
    bits.put(0, 1)  # redundant_pic_cnt_present_flag
    return _nal(0x68, bits.trailing())


I_PCM = 25  # mb_type of a raw macroblock in an I slice


def idr_slice(width: int, height: int, color: RGB, idr_pic_id: int) -> bytes:
    """One IDR picture of ``color``: a single I slice of I_PCM macroblocks."""
    y, cb, cr = yuv(color)
    samples = bytes((y,)) * 256 + bytes((cb,)) * 64 + bytes((cr,)) * 64
    bits = MsbBits()
    bits.ue(0)  # first_mb_in_slice
    bits.ue(7)  # slice_type: I, and so is every slice of the picture
    bits.ue(0)  # pic_parameter_set_id
    bits.put(0, 4)  # frame_num (log2_max_frame_num = 4)
    bits.ue(idr_pic_id)  # differs between consecutive IDR pictures
    bits.put(0, 1)  # no_output_of_prior_pics_flag
    bits.put(0, 1)  # long_term_reference_flag
    bits.se(0)  # slice_qp_delta
    for _ in range(((width + 15) // 16) * ((height + 15) // 16)):
        bits.ue(I_PCM)
        bits.align_zero()  # pcm_alignment_zero_bit
        bits.data += samples  # byte-aligned here: the samples go straight in
    return _nal(0x65, bits.trailing())


# -- ISO BMFF ------------------------------------------------------------------------------------------------------

_MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)


def _box(kind: bytes, *parts: bytes) -> bytes:
    body = b"".join(parts)
    return struct.pack(">I", 8 + len(body)) + kind + body


def _full(kind: bytes, version: int, flags: int, *parts: bytes) -> bytes:
    return _box(kind, struct.pack(">I", (version << 24) | flags), *parts)


def _avc1(width: int, height: int, sps_nal: bytes, pps_nal: bytes) -> bytes:
    avcc = (
        bytes((1, PROFILE_BASELINE, CONSTRAINTS, sps_nal[3], 0xFF, 0xE1))  # 4-byte NAL lengths, one SPS
        + struct.pack(">H", len(sps_nal))
        + sps_nal
        + b"\x01"
        + struct.pack(">H", len(pps_nal))
        + pps_nal
    )
    entry = (
        bytes(6)
        + struct.pack(">H", 1)  # data_reference_index
        + bytes(16)
        + struct.pack(">HHIIIH", width, height, 0x480000, 0x480000, 0, 1)
        + bytes(32)  # compressorname
        + struct.pack(">Hh", 0x18, -1)
    )
    return _box(b"avc1", entry, _box(b"avcC", avcc))


def encode_mp4(width: int, height: int, colors: Sequence[RGB], fps: float) -> bytes:
    """An MP4 of one H.264 frame per colour at ``fps`` frames a second."""
    if not colors:
        raise ValueError("a video needs at least one frame")
    width, height = width + width % 2, height + height % 2  # yuv420p needs even sizes (libx264 refuses odd ones)
    sps_nal, pps_nal = sps(width, height), pps()
    samples = [idr_slice(width, height, color, i % 2) for i, color in enumerate(colors)]
    samples = [struct.pack(">I", len(nal)) + nal for nal in samples]
    rate = Fraction(fps).limit_denominator(1001)
    timescale, delta = rate.numerator * 1000 // rate.denominator or 1, 1000
    duration = len(samples) * delta
    duration_ms = duration * 1000 // timescale
    ftyp = _box(b"ftyp", b"isom", struct.pack(">I", 0x200), b"isomiso2avc1mp41")
    mdat = _box(b"mdat", *samples)
    sizes = struct.pack(f">II{len(samples)}I", 0, len(samples), *(len(s) for s in samples))
    stbl = _box(
        b"stbl",
        _full(b"stsd", 0, 0, struct.pack(">I", 1), _avc1(width, height, sps_nal, pps_nal)),
        _full(b"stts", 0, 0, struct.pack(">III", 1, len(samples), delta)),
        _full(b"stsc", 0, 0, struct.pack(">IIII", 1, 1, len(samples), 1)),
        _full(b"stsz", 0, 0, sizes),
        _full(b"stco", 0, 0, struct.pack(">II", 1, len(ftyp) + 8)),  # the samples start right after mdat's header
    )
    minf = _box(
        b"minf",
        _full(b"vmhd", 0, 1, bytes(8)),
        _box(b"dinf", _full(b"dref", 0, 0, struct.pack(">I", 1), _full(b"url ", 0, 1))),
        stbl,
    )
    mdia = _box(
        b"mdia",
        _full(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, timescale, duration, 0x55C4, 0)),  # language "und"
        _full(b"hdlr", 0, 0, bytes(4), b"vide", bytes(12), b"VideoHandler\x00"),
        minf,
    )
    tkhd = _full(
        b"tkhd",
        0,
        3,  # enabled, in the movie
        struct.pack(">IIIII", 0, 0, 1, 0, duration_ms),
        bytes(8),
        struct.pack(">hhhH", 0, 0, 0, 0),  # layer, alternate group, volume, reserved
        _MATRIX,
        struct.pack(">II", width << 16, height << 16),
    )
    trak = _box(b"trak", tkhd, mdia)
    mvhd = _full(
        b"mvhd",
        0,
        0,
        struct.pack(">IIIIIH", 0, 0, 1000, duration_ms, 0x10000, 0x100),
        bytes(10),
        _MATRIX,
        bytes(24),
        struct.pack(">I", 2),
    )
    return ftyp + mdat + _box(b"moov", mvhd, trak)
