"""The spoken turns both `koe bench latency` runs play (`koe.bench.latency` on Voice Live, `koe.bench.latency_acs` on
an ACS call): the fixture utterances in 20 ms frames with where their voice begins and ends, and one turn's figures.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from koe.audio.pcm import Pcm, rms_dbfs
from koe.audio.resample import resample

RATE = 24000
VOICED_DBFS = -45.0
"""A 20 ms frame louder than this counts as speech when finding where an utterance ends."""
LEAD_S = 0.6
FIXTURES = ("utterance", "short", "reply")
INTERRUPT_AFTER_S = 0.8
"""A barge-in turn's speech begins (its first voiced frame) this long after the reply's first audio."""
ECHO_TAPS = ((0.060, -12.0), (0.095, -22.0))
"""The room between the caller's loudspeaker and microphone, as (delay s, gain dB) taps: a laptop or speakerphone
without an echo canceller of its own, 12 dB of echo return loss. The reply's own audio is in the input, so koe's
echo canceller must keep the reply from interrupting itself."""
FALSE_START_AFTER_S = 0.6
"""koe's report of speech begun this long after the caller's last utterance ended was not the caller: koe hears an
onset within about 0.3 s of it."""
SPEAKER_HISTORY_S = 1.0
"""How much played audio the loudspeaker keeps; longer than the longest echo tap."""

Progress = Callable[[str], None]


@dataclass
class Utterance:
    name: str
    frames: list[bytes]
    first_voiced: int
    last_voiced: int


@dataclass
class Turn:
    fixture: str
    latency_ms: float | None = None
    breakdown: dict[str, Any] = field(default_factory=dict)
    barge_in_ms: float | None = None
    barge_in_heard_ms: float | None = None
    """From the interrupting speech's onset to its `speech_started` received."""
    reply_sent_before_onset: bool | None = None
    """A barge-in turn whose reply had been sent in full before the interrupting speech began."""
    false_starts: int = 0
    """Speech onsets koe reported during this turn while the caller was silent (the reply interrupting itself)."""


def load_utterances(rate: int = RATE) -> list[Utterance]:
    """The fixture utterances at `rate`, in 20 ms frames."""
    from koe.audio.files import read_audio
    from koe.bench.fixtures import AUDIO

    found = []
    frame = rate // 50
    for name in FIXTURES:
        pcm = read_audio(AUDIO / f"{name}_48k.wav", 48000)
        audio: Pcm = resample(pcm, 48000, rate)
        audio = np.concatenate((audio, np.zeros(-audio.size % frame, np.int16)))
        frames = [audio[i : i + frame] for i in range(0, audio.size, frame)]
        voiced = [i for i, frame in enumerate(frames) if rms_dbfs(frame) > VOICED_DBFS]
        found.append(Utterance(name, [f.astype("<i2").tobytes() for f in frames], voiced[0], voiced[-1]))
    return found


class Loudspeaker:
    """The caller's loudspeaker: reply audio plays from when it arrives, after what is already playing, without
    gaps; `flush()` drops what has not played yet, as a client does when koe says the caller spoke (Voice Live's
    `speech_started`, ACS's `StopAudio`). `echo()` is what of it reaches the microphone, through `ECHO_TAPS`."""

    def __init__(self, rate: int, taps: tuple[tuple[float, float], ...] = ECHO_TAPS) -> None:
        self.rate = rate
        self._taps = [(round(delay * rate), 10 ** (gain / 20)) for delay, gain in taps]
        self._epoch = time.perf_counter()
        self._base = 0
        """Sample number (since `_epoch`) of `_played[0]`."""
        self._played = np.zeros(0, np.float32)
        self._end = 0
        """Sample number at which everything received so far has been played."""

    def _at(self, when: float) -> int:
        return round((when - self._epoch) * self.rate)

    def play(self, pcm: bytes, at: float) -> None:
        """Reply audio (PCM16LE at `rate`) received at `at` (perf_counter)."""
        samples = np.frombuffer(pcm, "<i2").astype(np.float32)
        start = max(self._at(at), self._end)
        keep_from = self._at(at) - round(SPEAKER_HISTORY_S * self.rate)
        if keep_from > self._base:
            self._played = self._played[keep_from - self._base :]
            self._base = keep_from
        end = start + samples.size
        if end - self._base > self._played.size:
            self._played = np.concatenate((self._played, np.zeros(end - self._base - self._played.size, np.float32)))
        self._played[start - self._base : end - self._base] = samples
        self._end = end

    def flush(self, at: float) -> None:
        now = self._at(at)
        if self._end > now:
            self._played[max(0, now - self._base) :] = 0.0
            self._end = now

    def echo(self, at: float, samples: int) -> np.ndarray[Any, np.dtype[np.float32]]:
        """What reaches the microphone during the `samples` samples that end at `at`."""
        out = np.zeros(samples, np.float32)
        for delay, gain in self._taps:
            hi = self._at(at) - delay - self._base
            lo = hi - samples
            if hi <= 0 or lo >= self._played.size:
                continue
            part = self._played[max(lo, 0) : min(hi, self._played.size)]
            offset = max(lo, 0) - lo
            out[offset : offset + part.size] += gain * part
        return out


class Microphone:
    """A caller's microphone: queued utterances go out one 20 ms frame at a time, at real-time pace, with silence
    between them (`send(None, n)`); `say()` tells when an utterance's first and last voiced frames were sent. With a
    `speaker`, its echo is mixed in (a frame with echo but no speech is sent as audio, not as silence)."""

    def __init__(self, speaker: Loudspeaker | None = None) -> None:
        self.speaking: list[bytes] = []
        self.marks: dict[int, asyncio.Future[float]] = {}
        self.sent = 0
        self.speaker = speaker
        self.last_speech_at = 0.0
        """When the last frame of an utterance was sent (perf_counter)."""
        self.false_starts = 0
        """Times koe said the caller began to speak while they were silent (`heard_speech()`): the echo of the reply,
        or noise, taken for speech."""

    def heard_speech(self, at: float) -> None:
        """koe said at `at` that the caller began to speak; counted in `false_starts` if they were silent."""
        if not self.speaking and at - self.last_speech_at > FALSE_START_AFTER_S:
            self.false_starts += 1

    def say(self, utterance: Utterance) -> tuple[asyncio.Future[float], asyncio.Future[float]]:
        """Queue an utterance; the futures resolve to when its first and last voiced frames were sent."""
        loop = asyncio.get_running_loop()
        first, last = loop.create_future(), loop.create_future()
        base = self.sent + len(self.speaking)
        self.marks[base + utterance.first_voiced] = first
        self.marks[base + utterance.last_voiced] = last
        self.speaking.extend(utterance.frames)
        return first, last

    async def run(self, send: Callable[[bytes | None, int], Awaitable[None]]) -> None:
        """Send frame after frame (`send(pcm or None for silence, its number)`) every 20 ms, until cancelled."""
        next_frame = time.perf_counter()
        while True:
            pcm = self.speaking.pop(0) if self.speaking else None
            if pcm is not None:
                self.last_speech_at = time.perf_counter()
            if self.speaker is not None:
                # The frame's echo as a sound card captures it: at the frame's own time, not when this task woke.
                pcm = self._with_echo(pcm, next_frame)
            await send(pcm, self.sent)
            mark = self.marks.pop(self.sent, None)
            if mark is not None:
                mark.set_result(time.perf_counter())
            self.sent += 1
            next_frame += 0.02
            await asyncio.sleep(max(0.0, next_frame - time.perf_counter()))

    def _with_echo(self, pcm: bytes | None, at: float) -> bytes | None:
        assert self.speaker is not None
        echo = self.speaker.echo(at, self.speaker.rate // 50)
        if not echo.any():
            return pcm
        if pcm is not None:
            echo += np.frombuffer(pcm, "<i2")
        mixed: bytes = np.clip(np.rint(echo), -32768, 32767).astype("<i2").tobytes()
        return mixed
