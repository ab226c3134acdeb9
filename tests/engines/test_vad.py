"""Silero VAD on real audio: it finds the speech in every fixture and none in silence, white or brown noise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from koe.audio.files import read_audio
from koe.audio.pcm import AudioFormatError, Pcm
from koe.engines.registry import Engines
from koe.engines.vad_silero import WINDOW_SAMPLES, SileroStream, SileroVAD

SPEECH = 0.5
NOISE_S = 3


def _stream(engines: Engines) -> SileroStream:
    vad = engines.require("vad")
    assert isinstance(vad, SileroVAD)
    return vad.stream()


def _brown_noise(samples: int, seed: int) -> Pcm:
    walk = np.cumsum(np.random.default_rng(seed).standard_normal(samples))
    walk -= np.convolve(walk, np.ones(1601) / 1601, "same")  # keep the walk from drifting off to full scale
    return np.rint(walk / np.abs(walk).max() * 8000).astype(np.int16)


@pytest.mark.parametrize(
    "name",
    ["utterance_16k.wav", "short_22k.wav", "reply_48k.wav", "utterance_noisy_snr10_48k.wav", "reply_espeak_22k.wav"],
)
def test_finds_the_speech_in_the_fixtures(engines: Engines, audio_dir: Path, name: str) -> None:
    pcm = read_audio(audio_dir / name, 16000)
    probabilities = np.array(_stream(engines).push(pcm))
    assert probabilities.size == pcm.size // WINDOW_SAMPLES
    speech = probabilities > SPEECH
    assert speech.mean() > 0.7  # the fixtures are speech from end to end, with short pauses
    assert speech[: 16000 // WINDOW_SAMPLES].any()  # within the first second


@pytest.mark.parametrize(
    ("kind", "pcm"),
    [
        ("silence", np.zeros(16000 * NOISE_S, dtype=np.int16)),
        ("white", np.rint(np.random.default_rng(1).standard_normal(16000 * NOISE_S) * 3000).astype(np.int16)),
        (
            "loud white",
            np.clip(np.random.default_rng(2).standard_normal(16000 * NOISE_S) * 12000, -32768, 32767).astype(np.int16),
        ),
        ("brown", _brown_noise(16000 * NOISE_S, 3)),
    ],
)
def test_no_speech_in_silence_and_noise(engines: Engines, kind: str, pcm: Pcm) -> None:
    probabilities = _stream(engines).push(pcm)
    assert len(probabilities) == pcm.size // WINDOW_SAMPLES
    assert max(probabilities) < SPEECH, kind


def test_state_is_carried_and_streams_are_independent(engines: Engines, audio_dir: Path) -> None:
    pcm = read_audio(audio_dir / "short_16k.wav", 16000)
    whole = _stream(engines).push(pcm)
    chunked_stream = _stream(engines)
    chunked = [p for i in range(0, pcm.size, 320) for p in chunked_stream.push(pcm[i : i + 320])]
    assert np.allclose(whole, chunked, atol=1e-5)
    # Each window alone, with the state reset in between, is not the same model run: the state matters.
    fresh = _stream(engines)
    alone = []
    for window in range(len(whole)):
        fresh.reset()
        alone.append(fresh.process(pcm[window * WINDOW_SAMPLES : (window + 1) * WINDOW_SAMPLES]))
    assert not np.allclose(whole, alone, atol=1e-3)


def test_window_size_is_enforced(engines: Engines) -> None:
    with pytest.raises(AudioFormatError, match="512 samples, got 320"):
        _stream(engines).process(np.zeros(320, dtype=np.int16))
