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
    reply_sent_before_onset: bool | None = None
    """A barge-in turn whose reply had been sent in full before the interrupting speech began."""


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


class Microphone:
    """A caller's microphone: queued utterances go out one 20 ms frame at a time, at real-time pace, with silence
    between them (`send(None, n)`); `say()` tells when an utterance's first and last voiced frames were sent."""

    def __init__(self) -> None:
        self.speaking: list[bytes] = []
        self.marks: dict[int, asyncio.Future[float]] = {}
        self.sent = 0

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
            await send(self.speaking.pop(0) if self.speaking else None, self.sent)
            mark = self.marks.pop(self.sent, None)
            if mark is not None:
                mark.set_result(time.perf_counter())
            self.sent += 1
            next_frame += 0.02
            await asyncio.sleep(max(0.0, next_frame - time.perf_counter()))
