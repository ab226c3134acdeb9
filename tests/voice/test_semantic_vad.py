"""`semantic_vad` on real speech (issue 13, must hold 6): a complete turn ends after the same silence as `server_vad`,
an unfinished one (a trailing "and", "for", a comma) is held up to its eagerness timeout.

Speech goes in as fast as it can, the silence after it at half real time (the transcript of the pause is made while
it lasts, as on a call, with room for a loaded machine); the wait is measured on the audio's own clock, from the last
voiced window (`SpeechStopped`) to the turn's end (when `SpeechStopped` is reported). Margins cover a VAD window or
two and a slow transcription, never a speed target.

Whether an utterance reads as finished is decided on what Whisper wrote, and Whisper may write a question without
its "?" on another CPU (Piper's speech also differs from run to run). So each check applies koe's rule to the
transcript the turn got: the test is of the rule and its timing, not of Whisper's punctuation."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from koe.audio.pcm import Pcm
from koe.audio.resample import resample
from koe.engines.registry import Engines
from koe.voice import events as ev
from koe.voice.config import Eagerness, SessionConfig, TurnDetection, TurnType
from koe.voice.endpointing import EAGERNESS_TIMEOUTS_MS, looks_finished
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


async def turn_wait_ms(engines: Engines, audio: Pcm, kind: TurnType, eagerness: Eagerness = "auto") -> tuple[int, str]:
    """How long the turn went on after its last voiced window, in ms of audio, and its transcript."""
    fed_ms = 0
    stopped: list[tuple[int, ev.SpeechStopped]] = []

    def observe(event: ev.Event) -> None:
        if isinstance(event, ev.SpeechStopped):
            stopped.append((fed_ms, event))

    td = TurnDetection(type=kind, silence_duration_ms=SILENCE_MS, eagerness=eagerness)
    session = Session(engines, SessionConfig(mode="transcribe", turn_detection=td), observer=observe)
    heard: list[str] = []
    reader = asyncio.ensure_future(_drain(session, heard))
    for start in range(0, audio.size, FRAME):
        session.append_audio(audio[start : start + FRAME], 16000)
        fed_ms += FRAME_MS
    silence = np.zeros(FRAME, np.int16)
    pool = engines.require("stt").pool
    while not stopped and fed_ms < audio.size // 16 + 10_000:
        await asyncio.sleep(2 * FRAME_MS / 1000)  # the pause at half real time: the transcript is made meanwhile
        # However slow the CPU: how fast Whisper is belongs to the benchmarks (the pool has no idle event).
        while pool.active or pool.depth:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        session.append_audio(silence, 16000)
        fed_ms += FRAME_MS
    for _ in range(1500):  # the turn's transcript, which the check reads (made after its end)
        if heard:
            break
        await asyncio.sleep(0.02)
    await session.close()
    await reader
    assert len(stopped) == 1, "the turn did not end (or ended more than once)"
    assert heard, "the turn got no transcript"
    at_ms, event = stopped[0]
    return at_ms - event.audio_end_ms, " ".join(heard)


async def _drain(session: Session, heard: list[str]) -> None:
    async for event in session.events():
        if isinstance(event, ev.TranscriptCompleted):
            heard.append(event.text)


def _held(wait_ms: int, timeout_ms: int) -> bool:
    return timeout_ms - 100 <= wait_ms <= timeout_ms + 2 * 32 + 20


@pytest.mark.parametrize("source", ["fixture", "What time is it?", "What is the weather going to be like?"])
async def test_a_complete_turn_ends_as_fast_as_under_server_vad(engines: Engines, source: str) -> None:
    audio = speech("short_16k.wav", tail_s=0.0) if source == "fixture" else piper(engines, source)
    server, _ = await turn_wait_ms(engines, audio, "server_vad")
    semantic, heard = await turn_wait_ms(engines, audio, "semantic_vad", "medium")
    assert SILENCE_MS - 32 <= server <= SILENCE_MS + 2 * 32 + 20  # VAD windows of 32 ms, frames of 20
    if looks_finished(heard):
        assert semantic <= server + MARGIN_MS, (semantic, server, heard)
    else:  # Whisper wrote it unfinished ("What is the weather going to be like"): it is held, as the rule says
        assert _held(semantic, EAGERNESS_TIMEOUTS_MS["medium"]), (semantic, heard)


@pytest.mark.parametrize("text", ["I would like to book a table for", "I was looking at the weather, and"])
async def test_an_unfinished_turn_is_held_up_to_its_eagerness_timeout(engines: Engines, text: str) -> None:
    audio = piper(engines, text)
    timeout = EAGERNESS_TIMEOUTS_MS["high"]
    semantic, heard = await turn_wait_ms(engines, audio, "semantic_vad", "high")
    if looks_finished(heard):  # Whisper wrote it finished after all: it ends as a finished one does
        assert semantic <= SILENCE_MS + 2 * 32 + 20 + MARGIN_MS, (semantic, heard)
    else:
        assert _held(semantic, timeout), (semantic, heard)
