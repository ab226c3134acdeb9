"""G.711 µ-law and A-law against the reference algorithm (CPython's `audioop`, Sun's g711.c) and ITU values."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from koe.audio.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode

ALL_CODES = bytes(range(256))
ALL_SAMPLES = np.arange(-32768, 32768, dtype=np.int16)


@pytest.fixture(scope="module")
def audioop():  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return pytest.importorskip("audioop")  # removed in Python 3.13


def test_ulaw_known_values() -> None:
    # 0xFF/0x7F are positive/negative zero; 0x80/0x00 the extremes (G.711 table 2a).
    assert ulaw_decode(b"\xff\x7f\x80\x00").tolist() == [0, 0, 32124, -32124]
    assert ulaw_encode(np.array([0, 32767, -32768, 8, -8], dtype=np.int16)) == b"\xff\x80\x00\xfe\x7e"


def test_alaw_known_values() -> None:
    # A-law codes are even-bit inverted (xor 0x55): 0xD5/0x55 are the smallest steps, 0xAA/0x2A the extremes.
    assert alaw_decode(b"\xd5\x55\xaa\x2a").tolist() == [8, -8, 32256, -32256]
    assert alaw_encode(np.array([0, 32767, -32768], dtype=np.int16)) == b"\xd5\xaa\x2a"


def test_ulaw_every_code_round_trips() -> None:
    back = ulaw_encode(ulaw_decode(ALL_CODES))
    expected = bytearray(ALL_CODES)
    expected[0x7F] = 0xFF  # negative zero encodes back as positive zero
    assert back == bytes(expected)


def test_alaw_every_code_round_trips() -> None:
    assert alaw_encode(alaw_decode(ALL_CODES)) == ALL_CODES


def test_every_code_is_a_distinct_level() -> None:
    # µ-law has two zeros (0x7F, 0xFF); every other code of both laws is its own quantization level.
    assert len(set(ulaw_decode(ALL_CODES).tolist())) == 255
    assert len(set(alaw_decode(ALL_CODES).tolist())) == 256


@pytest.mark.parametrize(("encode", "reference"), [(ulaw_encode, "lin2ulaw"), (alaw_encode, "lin2alaw")])
def test_encode_matches_reference_for_every_sample(encode, reference, audioop) -> None:  # type: ignore[no-untyped-def]
    assert encode(ALL_SAMPLES) == getattr(audioop, reference)(ALL_SAMPLES.tobytes(), 2)


@pytest.mark.parametrize(("decode", "reference"), [(ulaw_decode, "ulaw2lin"), (alaw_decode, "alaw2lin")])
def test_decode_matches_reference_for_every_code(decode, reference, audioop) -> None:  # type: ignore[no-untyped-def]
    assert decode(ALL_CODES).tobytes() == getattr(audioop, reference)(ALL_CODES, 2)


@pytest.mark.parametrize(("encode", "decode"), [(ulaw_encode, ulaw_decode), (alaw_encode, alaw_decode)])
def test_quantization_error_is_bounded(encode, decode) -> None:  # type: ignore[no-untyped-def]
    # Companding keeps the relative error of loud samples small: within one step of the 16-step segment.
    loud = ALL_SAMPLES[np.abs(ALL_SAMPLES.astype(np.int32)) > 256]
    back = decode(encode(loud)).astype(np.int32)
    rel = np.abs(back - loud.astype(np.int32)) / np.abs(loud.astype(np.int32))
    assert rel.max() < 0.07


def test_accepts_numpy_codes_and_odd_lengths() -> None:
    codes = np.array([0xFF, 0x80, 0x00], dtype=np.uint8)
    assert ulaw_decode(codes).tolist() == [0, 32124, -32124]
    assert alaw_decode(b"\xd5").tolist() == [8]
