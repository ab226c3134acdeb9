"""The spoken turns both `koe bench latency` runs play (`koe.bench.latency` on Voice Live, `koe.bench.latency_acs` on
an ACS call): the fixture utterances in 20 ms frames with where their voice begins and ends, and one turn's figures.
"""

from __future__ import annotations

from collections.abc import Callable
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
