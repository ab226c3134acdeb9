"""Resampling between every pair of supported rates: length and a tone's frequency survive, one-shot and streaming."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from koe.audio.pcm import SUPPORTED_RATES, AudioFormatError, Pcm
from koe.audio.resample import Resampler, SteadyResampler, resample

PAIRS = list(itertools.permutations(SUPPORTED_RATES, 2))
TONE_HZ = 1000.0
TONE_S = 1.0


def _tone(rate: int, hz: float = TONE_HZ, seconds: float = TONE_S) -> Pcm:
    t = np.arange(int(rate * seconds)) / rate
    return np.rint(np.sin(2 * np.pi * hz * t) * 12000).astype(np.int16)


def _peak_hz(pcm: Pcm, rate: int) -> float:
    middle = pcm[pcm.size // 4 : 3 * pcm.size // 4].astype(np.float64)
    spectrum = np.abs(np.fft.rfft(middle * np.hanning(middle.size)))
    return float(np.fft.rfftfreq(middle.size, 1 / rate)[int(np.argmax(spectrum))])


@pytest.mark.parametrize(("src", "dst"), PAIRS)
def test_one_shot_keeps_length_and_frequency(src: int, dst: int) -> None:
    out = resample(_tone(src), src, dst)
    assert out.dtype == np.int16
    assert abs(out.size - dst * TONE_S) <= 1
    assert _peak_hz(out, dst) == pytest.approx(TONE_HZ, abs=2.0)
    level = np.sqrt(np.mean(out[out.size // 4 : 3 * out.size // 4].astype(np.float64) ** 2))
    assert level == pytest.approx(12000 / np.sqrt(2), rel=0.02)


@pytest.mark.parametrize(("src", "dst"), PAIRS)
def test_streaming_in_20ms_chunks_matches_length_and_frequency(src: int, dst: int) -> None:
    tone = _tone(src)
    resampler = Resampler(src, dst)
    step = src // 50
    pieces = [resampler.process(tone[i : i + step]) for i in range(0, tone.size, step)]
    pieces.append(resampler.flush())
    out = np.concatenate(pieces)
    assert abs(out.size - dst * TONE_S) <= 2
    assert _peak_hz(out, dst) == pytest.approx(TONE_HZ, abs=2.0)


def test_streaming_output_is_aligned_with_one_shot() -> None:
    # soxr compensates its filter delay, so a streamed signal lines up with the one-shot conversion sample for sample.
    tone = _tone(16000, 440.0)
    resampler = Resampler(16000, 48000, quality="HQ")
    out = np.concatenate([resampler.process(tone[i : i + 320]) for i in range(0, tone.size, 320)] + [resampler.flush()])
    reference = resample(tone, 16000, 48000)
    assert out.size == reference.size
    assert np.max(np.abs(out.astype(np.int32) - reference)) <= 2


def test_same_rate_is_a_no_op() -> None:
    tone = _tone(16000)
    assert np.array_equal(resample(tone, 16000, 16000), tone)
    assert np.array_equal(Resampler(24000, 24000).process(tone), tone)
    assert resample(np.zeros(0, dtype=np.int16), 16000, 48000).size == 0


@pytest.mark.parametrize(("src", "dst"), [(44100, 16000), (16000, 11025), (0, 16000)])
def test_unsupported_rates_are_rejected(src: int, dst: int) -> None:
    with pytest.raises(AudioFormatError, match="unsupported sample rate"):
        resample(_tone(16000, seconds=0.1), src, dst)
    with pytest.raises(AudioFormatError, match="unsupported sample rate"):
        Resampler(src, dst)


@pytest.mark.parametrize(("src", "dst"), [(48000, 16000), (16000, 48000), (22050, 24000), (48000, 8000)])
def test_steady_resampler_returns_each_chunk_duration_at_a_fixed_delay(src: int, dst: int) -> None:
    tone = _tone(src, 440.0)
    plain = Resampler(src, dst, quality="LQ")
    reference = np.concatenate([plain.process(tone[i : i + src // 50]) for i in range(0, tone.size, src // 50)])

    resampler = SteadyResampler(src, dst)
    pieces = [resampler.process(tone[i : i + src // 50]) for i in range(0, tone.size, src // 50)]
    assert {piece.size for piece in pieces} == {dst // 50}
    out = np.concatenate(pieces)
    delay = resampler.delay_samples
    assert 0 < delay < dst // 10
    assert not out[:delay].any()
    # soxr dithers its int16 output, so two runs of the same filter differ by a unit or two
    assert np.max(np.abs(out[delay:].astype(np.int32) - reference[: out.size - delay])) <= 3
