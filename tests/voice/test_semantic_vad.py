"""`semantic_vad` on real speech (issue 13, must hold 6): a complete turn ends after the same silence as `server_vad`,
an unfinished one (a trailing "and", "for", a comma) is held up to its eagerness timeout.

Speech goes in as fast as it can, the silence after it at real time (so the transcript of the pause is made as it
would be on a call); the wait is measured on the audio's own clock, from the last voiced window (`SpeechStopped`) to
the turn's end (when `SpeechStopped` is reported). Margins cover a VAD window or two and a slow transcription, never
a speed target."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from koe.audio.pcm import Pcm
from koe.audio.resample import resample
from koe.engines.registry import Engines
from koe.voice import events as ev
from koe.voice.config import Eagerness, SessionConfig, TurnDetection, TurnType
from koe.voice.endpointing import EAGERNESS_TIMEOUTS_MS
from koe.voice.session import Session
from tests.voice.test_session import FRAME, speech

FRAME_MS = 20
SILENCE_MS = 500
MARGIN_MS = 250
"""A complete turn may end this much later under semantic_vad than under server_vad (a transcript not ready yet)."""


def piper(engines: Engines, text: str) -> Pcm:
    tts = engines.require("tts")
    pcm = np.concatenate([chunk.pcm for chunk in tts.synthesize_sync(text)])
    lead = np.zeros(8000, np.int16)
    return np.concatenate((lead, resample(pcm, tts.sample_rate(), 16000)))


async def turn_wait_ms(engines: Engines, audio: Pcm, kind: TurnType, eagerness: Eagerness = "auto") -> int:
    """How long the turn went on after its last voiced window, in ms of audio."""
    fed_ms = 0
    stopped: list[tuple[int, ev.SpeechStopped]] = []

    def observe(event: ev.Event) -> None:
        if isinstance(event, ev.SpeechStopped):
            stopped.append((fed_ms, event))

    td = TurnDetection(type=kind, silence_duration_ms=SILENCE_MS, eagerness=eagerness)
    session = Session(engines, SessionConfig(mode="transcribe", turn_detection=td), observer=observe)
    reader = asyncio.ensure_future(_drain(session))
    for start in range(0, audio.size, FRAME):
        session.append_audio(audio[start : start + FRAME], 16000)
        fed_ms += FRAME_MS
    silence = np.zeros(FRAME, np.int16)
    while not stopped and fed_ms < audio.size // 16 + 10_000:
        await asyncio.sleep(FRAME_MS / 1000)  # the pause at real time: the transcript is made while it lasts
        session.append_audio(silence, 16000)
        fed_ms += FRAME_MS
    await session.close()
    await reader
    assert len(stopped) == 1, "the turn did not end (or ended more than once)"
    at_ms, event = stopped[0]
    return at_ms - event.audio_end_ms


async def _drain(session: Session) -> None:
    async for _event in session.events():
        pass


@pytest.mark.parametrize("source", ["fixture", "What time is it?", "What is the weather going to be like?"])
async def test_a_complete_turn_ends_as_fast_as_under_server_vad(engines: Engines, source: str) -> None:
    audio = speech("short_16k.wav", tail_s=0.0) if source == "fixture" else piper(engines, source)
    server = await turn_wait_ms(engines, audio, "server_vad")
    semantic = await turn_wait_ms(engines, audio, "semantic_vad", "medium")
    assert SILENCE_MS - 32 <= server <= SILENCE_MS + 2 * 32 + 20  # VAD windows of 32 ms, frames of 20
    assert semantic <= server + MARGIN_MS, (semantic, server)


@pytest.mark.parametrize("text", ["I would like to book a table for", "I was looking at the weather, and"])
async def test_an_unfinished_turn_is_held_up_to_its_eagerness_timeout(engines: Engines, text: str) -> None:
    audio = piper(engines, text)
    timeout = EAGERNESS_TIMEOUTS_MS["high"]
    semantic = await turn_wait_ms(engines, audio, "semantic_vad", "high")
    assert timeout - 100 <= semantic <= timeout + 2 * 32 + 20, semantic
