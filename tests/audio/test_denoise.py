"""RNNoise noise suppression: cleans the noisy fixture, keeps every chunk's length, at any supported rate."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from koe.audio.denoise import NoiseSuppressor
from koe.audio.pcm import SUPPORTED_RATES, Pcm
from koe.audio.resample import resample

MIN_GAIN_DB = 3.0


def _snr_db(clean: Pcm, test: Pcm, delay: int) -> float:
    n = clean.size - delay
    ref = clean[:n].astype(np.float64)
    err = ref - test[delay : delay + n].astype(np.float64)
    return float(10 * np.log10(np.sum(ref**2) / np.sum(err**2)))


def _run(suppressor: NoiseSuppressor, pcm: Pcm, chunk: int) -> Pcm:
    pieces = [suppressor.process(pcm[i : i + chunk]) for i in range(0, pcm.size, chunk)]
    assert [p.size for p in pieces] == [min(chunk, pcm.size - i) for i in range(0, pcm.size, chunk)]
    return np.concatenate(pieces)


def test_rnnoise_improves_the_noisy_fixture(wav: Callable[[str], tuple[Pcm, int]]) -> None:
    clean, rate = wav("utterance_48k.wav")
    noisy, _ = wav("utterance_noisy_snr10_48k.wav")
    suppressor = NoiseSuppressor(rate)
    out = _run(suppressor, noisy, rate // 50)
    assert out.size == noisy.size
    before = _snr_db(clean, noisy, 0)
    after = _snr_db(clean, out, suppressor.delay_samples)
    assert before == pytest.approx(10.0, abs=0.1)
    assert after >= before + MIN_GAIN_DB
    assert 0.0 <= suppressor.speech_probability <= 1.0


@pytest.mark.parametrize("rate", [r for r in SUPPORTED_RATES if r != 48000])
def test_other_rates_with_odd_chunk_sizes(rate: int, wav: Callable[[str], tuple[Pcm, int]]) -> None:
    clean48, _ = wav("utterance_48k.wav")
    clean = resample(clean48, 48000, rate)
    noise = np.random.default_rng(5).standard_normal(clean.size)
    power = np.mean(clean.astype(np.float64) ** 2)
    noisy = np.clip(clean + noise * np.sqrt(power / 10 ** (5 / 10)), -32768, 32767).astype(np.int16)  # SNR 5 dB
    suppressor = NoiseSuppressor(rate)
    out = _run(suppressor, noisy, rate * 7 // 1000)  # 7 ms chunks: not a multiple of anything RNNoise uses
    assert out.size == noisy.size
    assert _snr_db(clean, out, suppressor.delay_samples) >= _snr_db(clean, noisy, 0) + MIN_GAIN_DB


def test_the_stated_delay_is_where_the_speech_is(wav: Callable[[str], tuple[Pcm, int]]) -> None:
    clean48, _ = wav("utterance_48k.wav")
    clean = resample(clean48, 48000, 16000)
    suppressor = NoiseSuppressor(16000)
    out = _run(suppressor, clean, 320)
    window = 40_000
    correlation = np.correlate(out[:window].astype(np.float64), clean[:window].astype(np.float64), "full")
    assert int(np.argmax(correlation)) - (window - 1) == suppressor.delay_samples


def test_closed_suppressor_refuses_work() -> None:
    suppressor = NoiseSuppressor(16000)
    suppressor.close()
    suppressor.close()
    with pytest.raises(RuntimeError, match="closed"):
        suppressor.process(np.zeros(160, dtype=np.int16))
