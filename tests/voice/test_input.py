"""Turn timing from speech probabilities, and the real Silero VAD on fixture speech."""

from __future__ import annotations

import numpy as np

from koe.engines.registry import Engines
from koe.voice.config import TurnDetection
from koe.voice.input import VOICE_END_MS, WINDOW_MS, ParticipantInput, SpeechDetector
from koe.voice.turns import TurnInput
from tests.conftest import load_wav


def _run(detector: SpeechDetector, probabilities: list[float]) -> list[tuple[TurnInput, int]]:
    signals = []
    for index, probability in enumerate(probabilities):
        for signal in detector.window(probability, (index + 1) * WINDOW_MS, idle_allowed=True):
            signals.append((signal.input, signal.at_ms))
    return signals


def test_onset_pause_and_turn_end() -> None:
    detector = SpeechDetector(TurnDetection(silence_duration_ms=320, speech_duration_ms=64))
    signals = _run(detector, [0.0] * 5 + [0.9] * 20 + [0.0] * 15)
    kinds = [kind for kind, _ in signals]
    assert kinds == [TurnInput.VOICE_START, TurnInput.VOICE_END, TurnInput.TURN_END]
    onset, voice_end, turn_end = (at for _, at in signals)
    assert onset == 5 * WINDOW_MS
    assert voice_end == 25 * WINDOW_MS  # the end of the last voiced window
    assert turn_end - voice_end >= 320


def test_blips_shorter_than_the_speech_duration_are_ignored() -> None:
    detector = SpeechDetector(TurnDetection(speech_duration_ms=200))
    assert _run(detector, [0.0, 0.9, 0.9, 0.0, 0.9, 0.0] * 5) == []


def test_a_short_pause_resumes_the_same_turn() -> None:
    detector = SpeechDetector(TurnDetection(silence_duration_ms=500))
    pause = [0.0] * (VOICE_END_MS // WINDOW_MS + 2)
    kinds = [kind for kind, _ in _run(detector, [0.9] * 10 + pause + [0.9] * 10)]
    assert kinds == [TurnInput.VOICE_START, TurnInput.VOICE_END, TurnInput.VOICE_START]


def test_hysteresis_keeps_a_speaker_going_through_a_dip() -> None:
    detector = SpeechDetector(TurnDetection(threshold=0.5))
    kinds = [kind for kind, _ in _run(detector, [0.9] * 10 + [0.4] * 10 + [0.9] * 5)]
    assert kinds == [TurnInput.VOICE_START]


def test_idle_timeout_fires_only_when_allowed() -> None:
    detector = SpeechDetector(TurnDetection(idle_timeout_ms=320))
    assert [kind for kind, _ in _run(detector, [0.0] * 12)] == [TurnInput.IDLE_TIMEOUT]
    quiet = SpeechDetector(TurnDetection(idle_timeout_ms=320))
    assert quiet.window(0.0, 1000, idle_allowed=False) == []


def test_real_vad_finds_the_fixture_utterance(engines: Engines) -> None:
    pcm, rate = load_wav("short_16k.wav")
    silence = np.zeros(rate, dtype=np.int16)
    source = ParticipantInput(None, engines.require("vad").stream(), TurnDetection(silence_duration_ms=500))
    signals = []
    audio = np.concatenate((silence, pcm, silence))
    for start in range(0, audio.size, 320):  # 20 ms frames, as ACS and Realtime clients send
        signals.extend(source.push(audio[start : start + 320]))
    kinds = [s.input for s in signals]
    assert kinds[0] is TurnInput.VOICE_START and kinds[-1] is TurnInput.TURN_END
    onset_ms = signals[0].at_ms
    assert 900 <= onset_ms <= 1400  # the speech starts after one second of silence
    end_ms = source.detector.last_voice_ms
    assert abs(end_ms - (1000 + pcm.size * 1000 // rate)) < 600
