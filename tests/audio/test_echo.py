"""EchoCanceller against libspeexdsp with fixture speech and a synthetic room echo of it."""

from __future__ import annotations

import ctypes.util
import itertools
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from koe.audio import echo
from koe.audio.echo import EchoCanceller, EchoCancellerUnavailable
from koe.audio.pcm import SUPPORTED_RATES, Pcm
from koe.audio.resample import resample

FIXTURE_RATE = 16000
CHUNK_MS = 20
NOISE_RMS = 20.0
"""Background noise in the microphone signal, about -64 dBFS."""
MIN_ERLE_DB = 15.0

Signal = npt.NDArray[np.float64]


def load(audio_dir: Path, name: str) -> Pcm:
    with wave.open(str(audio_dir / name)) as handle:
        assert handle.getframerate() == FIXTURE_RATE
        return np.frombuffer(handle.readframes(handle.getnframes()), dtype="<i2").copy()


def room_echo(far: Pcm, rate: int, delay_ms: int, seed: int = 0) -> Signal:
    """`far` through a plausible loudspeaker-to-microphone path: a delay, -6 dB, and a 60 ms decaying tail."""
    rng = np.random.default_rng(seed)
    delay, tail = rate * delay_ms // 1000, rate * 60 // 1000
    response = np.zeros(delay + tail)
    response[delay:] = rng.standard_normal(tail) * np.exp(-np.arange(tail) / (0.015 * rate)) * 0.25
    response[delay] = 1.0
    response *= 0.5
    return np.convolve(far.astype(np.float64), response)[: far.size]


def to_pcm(signal: Signal) -> Pcm:
    return np.clip(np.rint(signal), -32768, 32767).astype(np.int16)


def run(canceller: EchoCanceller, near: Pcm, far: Pcm, chunk: int) -> Signal:
    """Feed `near` and `far` in chunks; return the output shifted back by the canceller's delay. The input is
    padded to whole chunks, so that a short last chunk does not change the delay at the end."""
    size = near.size
    pad = -size % chunk
    near, far = np.pad(near, (0, pad)), np.pad(far, (0, pad))
    out = [canceller.process(near[i : i + chunk], far[i : i + chunk]) for i in range(0, near.size, chunk)]
    joined = np.concatenate(out).astype(np.float64)[:size]
    return np.concatenate((joined[canceller.delay_samples :], np.zeros(canceller.delay_samples)))


def last_two_seconds(canceller: EchoCanceller) -> slice:
    """The end of a `run()` output, where the filter has converged, without the zeros `run()` pads it with."""
    return slice(-2 * canceller.rate - canceller.delay_samples, -canceller.delay_samples)


def erle_db(echo_signal: Signal, residual: Signal) -> float:
    return float(10 * np.log10(np.sum(echo_signal**2) / np.sum(residual**2)))


@pytest.fixture(scope="module")
def far16(audio_dir: Path) -> Pcm:
    """About 9.6 s of the bot speaking: two fixture sentences back to back."""
    return np.concatenate((load(audio_dir, "reply_16k.wav"), load(audio_dir, "utterance_16k.wav")))


@pytest.mark.parametrize("delay_ms", [40, 80, 120])
def test_removes_echo_after_convergence(far16: Pcm, delay_ms: int) -> None:
    rate = FIXTURE_RATE
    echo_signal = room_echo(far16, rate, delay_ms)
    noise = np.random.default_rng(1).standard_normal(far16.size) * NOISE_RMS
    canceller = EchoCanceller(rate)
    out = run(canceller, to_pcm(echo_signal + noise), far16, rate * CHUNK_MS // 1000)
    last = last_two_seconds(canceller)
    assert erle_db(echo_signal[last], out[last]) >= MIN_ERLE_DB


@pytest.mark.parametrize("rate", SUPPORTED_RATES)
def test_every_supported_rate_cancels(far16: Pcm, rate: int) -> None:
    far = resample(far16, FIXTURE_RATE, rate)
    echo_signal = room_echo(far, rate, 80)
    canceller = EchoCanceller(rate)
    out = run(canceller, to_pcm(echo_signal), far, rate * CHUNK_MS // 1000)
    last = last_two_seconds(canceller)
    assert erle_db(echo_signal[last], out[last]) >= MIN_ERLE_DB


def test_double_talk_keeps_near_speech(far16: Pcm, audio_dir: Path) -> None:
    rate = FIXTURE_RATE
    echo_signal = room_echo(far16, rate, 80)
    # The caller starts talking 5.5 s into the bot's reply, a little quieter than the bot's echo.
    speech = np.zeros(far16.size)
    start = int(5.5 * rate)
    caller = load(audio_dir, "short_16k.wav").astype(np.float64) * 0.5
    speech[start : start + caller.size] = caller
    near = to_pcm(echo_signal + speech)
    out = run(EchoCanceller(rate), near, far16, rate * CHUNK_MS // 1000)
    talk = slice(start, start + caller.size)
    before = float(np.corrcoef(speech[talk], near[talk])[0, 1])
    after = float(np.corrcoef(speech[talk], out[talk])[0, 1])
    assert before < 0.5
    assert after > 0.85
    snr_db = 10 * np.log10(np.sum(speech[talk] ** 2) / np.sum((out[talk] - speech[talk]) ** 2))
    assert snr_db > 5.0


def test_no_far_end_gets_out_when_the_caller_is_silent(far16: Pcm, audio_dir: Path) -> None:
    # The caller says a word over the reply (no echo path at all), then is silent: the filter, which adapted during
    # that double talk, must not put a filtered copy of the reply into the silence.
    rate = FIXTURE_RATE
    word = load(audio_dir, "utterance_16k.wav")[rate // 2 : rate * 900 // 1000]
    near = np.concatenate((word, np.zeros(rate, dtype=np.int16)))
    out = run(EchoCanceller(rate), near, far16[: near.size], rate * CHUNK_MS // 1000)
    silence = out[word.size + rate // 10 : -rate // 10]
    assert float(np.abs(silence).max()) == 0.0


def test_output_does_not_depend_on_chunk_sizes(far16: Pcm) -> None:
    rate = FIXTURE_RATE
    near = to_pcm(room_echo(far16, rate, 80))[: 2 * rate]
    far = far16[: 2 * rate]
    whole = EchoCanceller(rate).process(near, far)
    assert whole.size == near.size
    canceller = EchoCanceller(rate)
    sizes = np.random.default_rng(2).integers(0, 700, size=200)
    edges = np.minimum(np.cumsum(np.concatenate(([0], sizes))), near.size)
    pieces = [canceller.process(near[a:b], far[a:b]) for a, b in itertools.pairwise(edges)]
    assert [p.size for p in pieces] == list(np.diff(edges))
    rest = canceller.process(near[edges[-1] :], far[edges[-1] :])
    # Whole frames need no lead; a chunking that ends inside a frame gets one, of a frame less one sample, from its
    # first such chunk (here the first): the same output, that much later.
    lead = canceller.delay_samples - canceller.frame_samples
    assert lead == canceller.frame_samples - 1
    later = np.concatenate((np.zeros(lead, dtype=np.int16), whole))[: near.size]
    assert np.array_equal(np.concatenate([*pieces, rest]), later)


def test_whole_frames_pass_with_one_frame_of_delay(far16: Pcm) -> None:
    # 20 ms chunks at 16 kHz, as ACS sends them: no lead, only the preprocessor's frame.
    rate = FIXTURE_RATE
    near = to_pcm(room_echo(far16, rate, 80))[:rate]
    canceller = EchoCanceller(rate)
    pieces = [canceller.process(near[i : i + 320], far16[i : i + 320]) for i in range(0, near.size, 320)]
    assert canceller.delay_samples == canceller.frame_samples
    assert np.array_equal(np.concatenate(pieces), EchoCanceller(rate).process(near, far16[:rate]))
    canceller.process(near[:100], far16[:100])  # then a chunk that ends inside a frame
    assert canceller.delay_samples == 2 * canceller.frame_samples - 1


def test_delay_samples_is_the_output_delay(audio_dir: Path) -> None:
    rate = FIXTURE_RATE
    speech = load(audio_dir, "short_16k.wav")
    canceller = EchoCanceller(rate)
    out = canceller.process(speech, np.zeros_like(speech)).astype(np.float64)
    lags = range(0, 2 * canceller.delay_samples)
    best = max(lags, key=lambda lag: float(np.dot(speech[: speech.size - lag], out[lag:])))
    assert best == canceller.delay_samples


def test_reset_starts_over(far16: Pcm) -> None:
    rate = FIXTURE_RATE
    near, far = to_pcm(room_echo(far16, rate, 80))[:rate], far16[:rate]
    canceller = EchoCanceller(rate)
    first = canceller.process(near, far)
    canceller.process(near[:1234], far[:1234])
    canceller.reset()
    assert np.array_equal(canceller.process(near, far), first)


def test_mismatched_lengths_raise() -> None:
    canceller = EchoCanceller(FIXTURE_RATE)
    with pytest.raises(ValueError, match="equally long"):
        canceller.process(np.zeros(320, dtype=np.int16), np.zeros(319, dtype=np.int16))


@pytest.mark.parametrize("rate", [11025, 44100])
def test_unsupported_rate_raises(rate: int) -> None:
    with pytest.raises(ValueError, match="unsupported sample rate"):
        EchoCanceller(rate)


def test_closed_canceller_refuses_audio() -> None:
    canceller = EchoCanceller(FIXTURE_RATE)
    canceller.close()
    canceller.close()
    with pytest.raises(RuntimeError, match="closed"):
        canceller.process(np.zeros(160, dtype=np.int16), np.zeros(160, dtype=np.int16))


def test_missing_library_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(echo, "_lib", None)
    monkeypatch.setattr(echo, "_LIBRARY_NAMES", ("libspeexdsp-not-installed.so",))
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    with pytest.raises(EchoCancellerUnavailable, match="apt install libspeexdsp1"):
        EchoCanceller(FIXTURE_RATE)
