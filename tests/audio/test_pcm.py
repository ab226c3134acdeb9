"""PCM16 frames: bytes and base64 in and out, validation of wire data, and re-framing into fixed sizes."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from koe.audio.pcm import (
    SUPPORTED_RATES,
    AudioFormatError,
    Reframer,
    check_rate,
    duration_ms,
    float_to_pcm,
    pcm_from_base64,
    pcm_from_bytes,
    pcm_to_base64,
    pcm_to_bytes,
    pcm_to_float,
    rms_dbfs,
    samples_for_ms,
    silence,
)


def test_bytes_round_trip_is_little_endian() -> None:
    pcm = np.array([0, 1, -1, 32767, -32768], dtype=np.int16)
    raw = pcm_to_bytes(pcm)
    assert raw == b"\x00\x00\x01\x00\xff\xff\xff\x7f\x00\x80"
    assert pcm_from_bytes(raw).tolist() == pcm.tolist()


def test_odd_length_bytes_are_rejected() -> None:
    with pytest.raises(AudioFormatError, match="even number of bytes, got 3"):
        pcm_from_bytes(b"\x00\x01\x02")


def test_base64_round_trip() -> None:
    pcm = np.arange(-320, 320, dtype=np.int16)
    text = pcm_to_base64(pcm)
    assert base64.b64decode(text) == pcm_to_bytes(pcm)
    assert np.array_equal(pcm_from_base64(text), pcm)
    assert np.array_equal(pcm_from_base64(text.encode()), pcm)
    assert pcm_to_base64(pcm_to_bytes(pcm)) == text


@pytest.mark.parametrize("text", ["not base64!", "AAA", "AA=A"])
def test_bad_base64_is_rejected(text: str) -> None:
    with pytest.raises(AudioFormatError, match="base64"):
        pcm_from_base64(text)


def test_base64_of_odd_length_pcm_is_rejected() -> None:
    with pytest.raises(AudioFormatError, match="even number"):
        pcm_from_base64(base64.b64encode(b"\x01\x02\x03").decode())


def test_rates() -> None:
    for rate in SUPPORTED_RATES:
        assert check_rate(rate) == rate
    with pytest.raises(AudioFormatError, match="unsupported sample rate 44100 Hz; supported rates are 8000"):
        check_rate(44100)


def test_float_conversion_clips_and_round_trips() -> None:
    pcm = float_to_pcm(np.array([0.0, 0.5, -0.5, 1.5, -1.5], dtype=np.float32))
    assert pcm.tolist() == [0, 16384, -16384, 32767, -32768]
    assert np.allclose(pcm_to_float(pcm)[:3], [0.0, 0.5, -0.5])


def test_durations_and_levels() -> None:
    assert samples_for_ms(16000, 20) == 320
    assert samples_for_ms(22050, 20) == 441
    assert duration_ms(480, 24000) == 20.0
    assert silence(48000, 10).size == 480
    assert rms_dbfs(silence(16000, 10)) == float("-inf")
    assert rms_dbfs(np.zeros(0, dtype=np.int16)) == float("-inf")
    full_square = np.array([32767, -32768] * 100, dtype=np.int16)
    assert rms_dbfs(full_square) == pytest.approx(0.0, abs=0.01)


def test_reframer_cuts_any_chunking_into_fixed_frames() -> None:
    signal = np.arange(5000, dtype=np.int16)
    reframer = Reframer(512)
    frames: list[np.ndarray] = []
    for size in (1, 100, 511, 513, 2000, 7, 1868):
        start = sum(f.size for f in frames) + reframer.pending_samples
        frames.extend(reframer.push(signal[start : start + size]))
    assert all(frame.size == 512 for frame in frames)
    assert len(frames) == 5000 // 512
    assert reframer.pending_samples == 5000 % 512
    assert np.array_equal(np.concatenate(frames), signal[: len(frames) * 512])
    (rest,) = reframer.flush(pad=True)
    assert rest.size == 512
    assert np.array_equal(rest[: 5000 % 512], signal[len(frames) * 512 :])
    assert not rest[5000 % 512 :].any()
    assert reframer.flush() == []


def test_reframer_flush_without_padding_and_reset() -> None:
    reframer = Reframer(160)
    assert reframer.push(np.ones(100, dtype=np.int16)) == []
    (rest,) = reframer.flush(pad=False)
    assert rest.size == 100
    reframer.push(np.ones(100, dtype=np.int16))
    reframer.reset()
    assert reframer.pending_samples == 0
    with pytest.raises(ValueError, match="positive"):
        Reframer(0)
