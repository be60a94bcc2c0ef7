"""Real audio files of silence: FLAC, MP3 and Opus in Ogg, as ComfyUI 0.3.64's ``SaveAudio``, ``SaveAudioMP3``
and ``SaveAudioOpus`` write them (through PyAV) for the audio the fake's nodes make (``EmptyAudio``: zeros).

Standard library only. Silence is what makes each format small to write by hand: FLAC frames of CONSTANT
subframes, MP3 frames whose side information is all zero, and the well-known three-byte silent Opus packet.
"""

from __future__ import annotations

import hashlib
import math
import struct

OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
OPUS_PRE_SKIP = 312  # libopus's encoder delay at 48 kHz
FLAC_BLOCK = 4096


def _crc(data: bytes, poly: int, width: int) -> int:
    """A CRC without reflection, initial value 0 (FLAC's CRC-8 and CRC-16, Ogg's CRC-32)."""
    top, mask = 1 << (width - 1), (1 << width) - 1
    crc = 0
    for byte in data:
        crc ^= byte << (width - 8)
        for _ in range(8):
            crc = ((crc << 1) ^ poly) & mask if crc & top else (crc << 1) & mask
    return crc


# -- FLAC -----------------------------------------------------------------------------------------------------------


def _utf8_number(value: int) -> bytes:
    """FLAC's frame number: UTF-8's byte layout, extended to 36 bits."""
    if value < 0x80:
        return bytes((value,))
    extra = 1
    while value >= 1 << (5 * extra + 6):
        extra += 1
    first = (0xFF00 >> (extra + 1)) & 0xFF | (value >> (6 * extra))
    tail = bytes(0x80 | ((value >> (6 * i)) & 0x3F) for i in range(extra - 1, -1, -1))
    return bytes((first,)) + tail


def encode_flac(sample_rate: int, channels: int, samples: int) -> bytes:
    """A 16-bit FLAC stream of ``samples`` silent frames per channel."""
    bits_per_sample = 16
    pcm_md5 = hashlib.md5(bytes(samples * channels * 2), usedforsecurity=False).digest()  # what the decoder gets
    info = struct.pack(">HH", FLAC_BLOCK, FLAC_BLOCK) + bytes(6)  # frame sizes: unknown (0)
    packed = (sample_rate << 44) | ((channels - 1) << 41) | ((bits_per_sample - 1) << 36) | samples
    info += packed.to_bytes(8, "big") + pcm_md5
    out = [b"fLaC", bytes((0x80,)) + len(info).to_bytes(3, "big") + info]  # last metadata block: STREAMINFO
    for number, start in enumerate(range(0, samples, FLAC_BLOCK)):
        block = min(FLAC_BLOCK, samples - start)
        size_code = 0b1100 if block == FLAC_BLOCK else 0b0111  # 4096, else 16-bit (size - 1) after the header
        header = bytes((0xFF, 0xF8, (size_code << 4) | 0b0000, ((channels - 1) << 4) | (0b100 << 1)))
        header += _utf8_number(number) + (b"" if block == FLAC_BLOCK else struct.pack(">H", block - 1))
        header += bytes((_crc(header, 0x07, 8),))
        frame = header + b"\x00\x00\x00" * channels  # per channel: CONSTANT subframe, value 0 (16 bits)
        out.append(frame + struct.pack(">H", _crc(frame, 0x8005, 16)))
    return b"".join(out)


# -- MP3 ---------------------------------------------------------------------------------------------------------------

# (MPEG version bits, samples per frame, bit rates of Layer III by index, sampling frequency indexes)
_MPEG1 = (
    0b11,
    1152,
    (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    {44100: 0, 48000: 1, 32000: 2},
)
_MPEG2 = (0b10, 576, (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160), {22050: 0, 24000: 1, 16000: 2})


def mp3_rate(sample_rate: int) -> int:
    """The MPEG-1/2 rate LAME would encode ``sample_rate`` at: itself when allowed, else the nearest one above."""
    rates = sorted((*_MPEG1[3], *_MPEG2[3]))
    return next((rate for rate in rates if rate >= sample_rate), 48000)


def encode_mp3(sample_rate: int, channels: int, samples: int, kbps: int = 128) -> bytes:
    """MPEG Layer III frames of silence: a header, side information of zeros (no main data), zero padding."""
    rate = mp3_rate(sample_rate)
    version, per_frame, bitrates, frequencies = _MPEG1 if rate in _MPEG1[3] else _MPEG2
    kbps = min((b for b in bitrates if b), key=lambda b: abs(b - kbps))
    mode = 0b11 if channels == 1 else 0b00  # mono, else stereo
    header = (0x7FF << 21) | (version << 19) | (0b01 << 17) | (1 << 16)  # Layer III, no CRC
    header |= (bitrates.index(kbps) << 12) | (frequencies[rate] << 10) | (mode << 6) | (1 << 2)  # original
    length = (144 if version == 0b11 else 72) * kbps * 1000 // rate
    frame = struct.pack(">I", header) + bytes(length - 4)
    frames = max(1, math.ceil(samples * rate / sample_rate / per_frame))
    return frame * frames


# -- Opus in Ogg ---------------------------------------------------------------------------------------------------


def opus_rate(sample_rate: int) -> int:
    """The rate ComfyUI resamples to before encoding Opus: itself if Opus has it, else the next one up."""
    return next((rate for rate in OPUS_RATES if rate >= sample_rate), 48000)


def _ogg_page(serial: int, sequence: int, granule: int, packets: list[bytes], flags: int) -> bytes:
    lacing = b"".join(bytes((255,)) * (len(p) // 255) + bytes((len(p) % 255,)) for p in packets)
    header = struct.pack("<4sBBqIII", b"OggS", 0, flags, granule, serial, sequence, 0) + bytes((len(lacing),))
    page = header + lacing + b"".join(packets)
    crc = _crc(page, 0x04C11DB7, 32)
    return page[:22] + struct.pack("<I", crc) + page[26:]


def encode_opus(sample_rate: int, channels: int, samples: int, *, serial: int = 0x0F0C0F0C) -> bytes:
    """An Ogg Opus stream (RFC 7845) of silent 20 ms packets covering ``samples`` at ``sample_rate``."""
    rate = opus_rate(sample_rate)
    total = math.ceil(samples * 48000 / sample_rate)  # granule positions count 48 kHz samples
    head = struct.pack("<8sBBHIhB", b"OpusHead", 1, channels, OPUS_PRE_SKIP, rate, 0, 0)
    vendor = b"fake-comfyui"
    tags = b"OpusTags" + struct.pack("<I", len(vendor)) + vendor + struct.pack("<I", 0)
    silent = bytes((0xFC if channels > 1 else 0xF8, 0xFF, 0xFE))  # CELT fullband 20 ms, one silent frame
    count = math.ceil((total + OPUS_PRE_SKIP) / 960)
    pages = [_ogg_page(serial, 0, 0, [head], 0x02), _ogg_page(serial, 1, 0, [tags], 0)]
    per_page = 50  # one second of packets a page
    for first in range(0, count, per_page):
        packets = min(per_page, count - first)
        last = first + packets == count
        granule = OPUS_PRE_SKIP + total if last else (first + packets) * 960
        pages.append(_ogg_page(serial, len(pages), granule, [silent] * packets, 0x04 if last else 0))
    return b"".join(pages)
