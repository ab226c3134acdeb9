"""One participant's input path: resampling, echo cancellation, noise suppression, VAD and turn timing.

`ParticipantInput.push()` takes audio as it arrives from the wire and returns the turn signals it caused, each
stamped with its time on this participant's input timeline. All of it is per-frame work that costs well under a
millisecond, so it runs on the event loop. The audio of the current turn is kept (from the onset minus the prefix
padding) until the session commits or clears it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from koe.audio.pcm import ENGINE_RATE, Pcm, Reframer, check_rate
from koe.audio.resample import Resampler
from koe.engines.base import VADStream
from koe.voice.config import TurnDetection
from koe.voice.turns import TurnInput

WINDOW_SAMPLES = 512
WINDOW_MS = WINDOW_SAMPLES * 1000 // ENGINE_RATE
VOICE_END_MS = 64
"""Silence after speech before the turn counts as paused (and speculative transcription starts)."""
HYSTERESIS = 0.15
"""Once speaking, a window counts as silence only below `threshold - HYSTERESIS` (Silero's own recommendation)."""
MAX_TURN_MS = 60_000
"""A turn that runs this long is ended, so one unbroken stream cannot grow a buffer without bound."""


@dataclass(frozen=True, slots=True)
class Signal:
    input: TurnInput
    at_ms: int


class SpeechDetector:
    """Turns a stream of speech probabilities, one per 32 ms window, into turn signals."""

    def __init__(self, config: TurnDetection | None) -> None:
        self.config = config
        self.end_wait_ms: Callable[[int], int | None] = lambda _silence_ms: (
            config.silence_duration_ms if config else None
        )
        """How long the pause must last to end the turn, given the silence so far; None: not decided yet."""
        self._voiced_ms = 0
        self._silent_ms = 0
        self._speaking = False
        self._paused = False
        self._speech_ms = 0
        self._candidate_onset = 0
        self.onset_ms = 0
        self.last_voice_ms = 0
        self._idle_ms = 0

    def reset(self) -> None:
        self._voiced_ms = self._silent_ms = self._speech_ms = self._idle_ms = 0
        self._speaking = self._paused = False

    def window(self, probability: float, end_ms: int, idle_allowed: bool) -> list[Signal]:
        config = self.config
        if config is None:
            return []
        signals: list[Signal] = []
        start_ms = end_ms - WINDOW_MS
        threshold = config.threshold - (HYSTERESIS if self._speaking else 0.0)
        if probability >= threshold:
            if not self._voiced_ms:
                self._candidate_onset = start_ms
            self._voiced_ms += WINDOW_MS
            self._silent_ms = 0
            self._idle_ms = 0
            if not self._speaking and self._voiced_ms >= max(config.speech_duration_ms, WINDOW_MS):
                self._speaking = True
                self._speech_ms = self._voiced_ms
                self.onset_ms = self._candidate_onset
                signals.append(Signal(TurnInput.VOICE_START, self.onset_ms))
            elif self._paused and self._voiced_ms >= WINDOW_MS * 2:
                self._paused = False
                signals.append(Signal(TurnInput.VOICE_START, start_ms))
            if self._speaking and not self._paused:
                self.last_voice_ms = end_ms
                self._speech_ms += WINDOW_MS
            return signals + self._limit(end_ms)
        self._voiced_ms = 0
        if not self._speaking:
            self._idle_ms += WINDOW_MS
            if config.idle_timeout_ms and idle_allowed and self._idle_ms >= config.idle_timeout_ms:
                self._idle_ms = 0
                signals.append(Signal(TurnInput.IDLE_TIMEOUT, end_ms))
            return signals
        self._silent_ms += WINDOW_MS
        if not self._paused and self._silent_ms >= min(VOICE_END_MS, config.silence_duration_ms):
            self._paused = True
            signals.append(Signal(TurnInput.VOICE_END, self.last_voice_ms))
        if self._paused:
            wait = self.end_wait_ms(self._silent_ms)
            if wait is not None and self._silent_ms >= wait:
                signals.append(Signal(TurnInput.TURN_END, end_ms))
                self.reset()
        return signals

    def _limit(self, end_ms: int) -> list[Signal]:
        if self._speech_ms < MAX_TURN_MS:
            return []
        self.reset()
        return [Signal(TurnInput.COMMIT, end_ms)]


class ParticipantInput:
    """The input pipeline of one participant (the only one, for a single-speaker stream)."""

    def __init__(
        self,
        participant: str | None,
        vad: VADStream,
        turn_detection: TurnDetection | None,
        echo: object | None = None,
        denoise: object | None = None,
    ) -> None:
        self.participant = participant
        self._vad = vad
        self.detector = SpeechDetector(turn_detection)
        self.echo = echo
        self.denoise = denoise
        self._resampler: Resampler | None = None
        self._windows = Reframer(WINDOW_SAMPLES)
        self.samples = 0
        """Samples received so far, at 16 kHz: the participant's input timeline."""
        self._chunks: list[Pcm] = []
        self._buffered = 0
        self.buffer_start = 0
        """Timeline position (samples) of the first buffered sample."""
        self.item_id: str | None = None
        """The user item the current speech will become (announced at the onset)."""

    @property
    def now_ms(self) -> int:
        return self.samples * 1000 // ENGINE_RATE

    def configure(self, turn_detection: TurnDetection | None) -> None:
        self.detector.config = turn_detection
        self.detector.reset()

    def to_engine_rate(self, pcm: Pcm, rate: int) -> Pcm:
        if rate == ENGINE_RATE:
            return pcm
        if self._resampler is None or self._resampler.src_rate != rate:
            self._resampler = Resampler(check_rate(rate), ENGINE_RATE)
        return self._resampler.process(pcm)

    def push(self, pcm: Pcm, far: Pcm | None = None, idle_allowed: bool = True) -> list[Signal]:
        """Feed 16 kHz audio (already converted); `far` is what was played meanwhile, for the echo canceller."""
        if self.echo is not None and far is not None:
            pcm = self.echo.process(pcm, far)  # type: ignore[attr-defined]  # koe.audio.echo.EchoCanceller
        if self.denoise is not None:
            pcm = self.denoise.process(pcm)  # type: ignore[attr-defined]  # koe.audio.denoise.NoiseSuppressor
        self._chunks.append(pcm)
        self._buffered += pcm.size
        signals: list[Signal] = []
        for window in self._windows.push(pcm):
            probability = self._vad.process(window)
            self.samples += WINDOW_SAMPLES
            signals.extend(self.detector.window(probability, self.now_ms, idle_allowed))
        if self.detector.config is not None and self.item_id is None:
            self._trim(self.detector.config.prefix_padding_ms)
        return signals

    @property
    def received_samples(self) -> int:
        """Every sample pushed, including the part of a window the VAD has not seen yet."""
        return self.buffer_start + self._buffered

    def buffered_ms(self) -> float:
        return self._buffered * 1000.0 / ENGINE_RATE

    def take(self, until_ms: int | None = None) -> tuple[Pcm, int, int]:
        """Remove and return the buffered audio (up to `until_ms` if given), with its start and end ms."""
        audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, dtype=np.int16)
        cut = audio.size
        if until_ms is not None:
            cut = max(0, min(audio.size, until_ms * ENGINE_RATE // 1000 - self.buffer_start))
        taken, rest = audio[:cut], audio[cut:]
        start_ms = self.buffer_start * 1000 // ENGINE_RATE
        self.buffer_start += cut
        self._chunks = [rest] if rest.size else []
        self._buffered = rest.size
        return taken, start_ms, self.buffer_start * 1000 // ENGINE_RATE

    def peek(self) -> Pcm:
        """The buffered audio, left in place (for speculative and partial transcription)."""
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
        return self._chunks[0] if self._chunks else np.zeros(0, dtype=np.int16)

    def clear(self) -> None:
        self.take()
        self.item_id = None
        self.detector.reset()

    def start_turn_at(self, onset_ms: int, prefix_padding_ms: int) -> int:
        """Drop buffered audio older than the onset minus the padding; return the turn's start in ms."""
        start_ms = max(0, onset_ms - prefix_padding_ms, self.buffer_start * 1000 // ENGINE_RATE)
        self.take(until_ms=start_ms)
        return start_ms

    def _trim(self, keep_ms: int) -> None:
        excess = self._buffered - keep_ms * ENGINE_RATE // 1000 - WINDOW_SAMPLES
        if excess > ENGINE_RATE // 2:  # trim in batches, not on every frame
            self.take(until_ms=(self.buffer_start + excess) * 1000 // ENGINE_RATE)
