"""ITU-T G.711 µ-law and A-law: 8-bit companded telephone audio to and from PCM16, vectorized with numpy.

`ulaw_decode()` / `alaw_decode()` turn codec bytes into PCM16 samples and `ulaw_encode()` / `alaw_encode()` go back.
The tables follow the reference algorithm of G.711 (as in Sun's public-domain g711.c, which ITU-T G.191 and
CPython's former `audioop` also follow): µ-law takes the top 14 bits of a sample, A-law the top 13, so encoding
then decoding gives the nearest quantization level, and decoding then encoding gives back every code (except µ-law's
negative zero 0x7F, which encodes back as positive zero 0xFF).

G.711 carries one byte per sample, so any byte length is valid; the codec itself has no rate (it is 8 kHz on the
wire by convention).
"""

from __future__ import annotations

from functools import cache

import numpy as np
import numpy.typing as npt

from koe.audio.pcm import Pcm

_SIGN_BIT = 0x80
_QUANT_MASK = 0x0F
_SEG_SHIFT = 4
_SEG_MASK = 0x70
_ULAW_BIAS = 0x84
"""Added to the magnitude before µ-law segment search, so every segment has the same 16-step shape."""
_ULAW_CLIP = 8159
"""Largest 14-bit magnitude µ-law can represent once the bias is added."""
_ULAW_SEG_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)
_ALAW_SEG_END = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], dtype=np.int32)

Codes = npt.NDArray[np.uint8]


def _all_samples() -> npt.NDArray[np.int32]:
    """Every int16 value, indexed by its uint16 bit pattern (so a table lookup is `table[pcm.view(uint16)]`)."""
    return np.arange(1 << 16, dtype=np.uint16).view(np.int16).astype(np.int32)


@cache
def _ulaw_encode_table() -> Codes:
    pcm = _all_samples() >> 2
    mask = np.where(pcm < 0, 0x7F, 0xFF)
    mag = np.minimum(np.abs(pcm), _ULAW_CLIP) + (_ULAW_BIAS >> 2)
    seg = np.searchsorted(_ULAW_SEG_END, mag)  # first segment whose end is >= mag
    code = (seg << _SEG_SHIFT) | ((mag >> (seg + 1)) & _QUANT_MASK)
    code = np.where(seg >= 8, 0x7F, code)
    return (code ^ mask).astype(np.uint8)


@cache
def _alaw_encode_table() -> Codes:
    pcm = _all_samples() >> 3
    mask = np.where(pcm >= 0, 0xD5, 0x55)
    mag = np.where(pcm >= 0, pcm, -pcm - 1)
    seg = np.searchsorted(_ALAW_SEG_END, mag)
    shift = np.where(seg < 2, 1, seg)
    code = (seg << _SEG_SHIFT) | ((mag >> shift) & _QUANT_MASK)
    code = np.where(seg >= 8, 0x7F, code)
    return (code ^ mask).astype(np.uint8)


@cache
def _ulaw_decode_table() -> Pcm:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = (((u & _QUANT_MASK) << 3) + _ULAW_BIAS) << ((u & _SEG_MASK) >> _SEG_SHIFT)
    return np.where(u & _SIGN_BIT, _ULAW_BIAS - t, t - _ULAW_BIAS).astype(np.int16)


@cache
def _alaw_decode_table() -> Pcm:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    seg = (a & _SEG_MASK) >> _SEG_SHIFT
    t = (a & _QUANT_MASK) << 4
    t = np.where(seg == 0, t + 8, (t + 0x108) << np.maximum(seg - 1, 0))
    return np.where(a & _SIGN_BIT, t, -t).astype(np.int16)


def _codes(data: bytes | bytearray | memoryview | Codes) -> Codes:
    if isinstance(data, np.ndarray):
        return np.asarray(data, dtype=np.uint8)
    return np.frombuffer(data, dtype=np.uint8)


def _pcm_index(pcm: Pcm) -> npt.NDArray[np.uint16]:
    return np.ascontiguousarray(pcm, dtype=np.int16).view(np.uint16)


def ulaw_decode(data: bytes | bytearray | memoryview | Codes) -> Pcm:
    """PCM16 samples from µ-law bytes (one sample per byte)."""
    out: Pcm = _ulaw_decode_table()[_codes(data)]
    return out


def alaw_decode(data: bytes | bytearray | memoryview | Codes) -> Pcm:
    """PCM16 samples from A-law bytes (one sample per byte)."""
    out: Pcm = _alaw_decode_table()[_codes(data)]
    return out


def ulaw_encode(pcm: Pcm) -> bytes:
    """µ-law bytes from PCM16 samples."""
    return bytes(_ulaw_encode_table()[_pcm_index(pcm)].tobytes())


def alaw_encode(pcm: Pcm) -> bytes:
    """A-law bytes from PCM16 samples."""
    return bytes(_alaw_encode_table()[_pcm_index(pcm)].tobytes())
