"""Shared pieces of the Realtime door tests: a live koe server with a key, fixture speech at 24 kHz, real-time
pacing, and a check that reply audio really is the speech its transcript says."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable

import numpy as np

from koe.audio.pcm import Pcm
from koe.audio.resample import resample
from koe.config import Settings, load_settings
from koe.engines.registry import Engines
from tests.conftest import load_wav
from tests.wer import wer

API_KEY = "koe-test-key"
FRAME_BYTES = 960  # 20 ms of PCM16 at 24 kHz


def realtime_settings(**realtime: object) -> Settings:
    return load_settings(
        overrides={
            "server": {"api_keys": [API_KEY]},
            "llm": {
                "max_tokens": 24,
                "temperature": 0.0,
                "system_prompt": "You are a helpful assistant. Answer in one short sentence.",
            },
            "realtime": realtime,
        }
    )


def speech_24k(name: str = "short_48k.wav", lead_s: float = 0.4, tail_s: float = 1.5) -> bytes:
    """A fixture utterance as 24 kHz PCM16 bytes, with silence around it."""
    pcm, rate = load_wav(name)
    audio = resample(pcm, rate, 24000)
    lead = np.zeros(int(lead_s * 24000), np.int16)
    tail = np.zeros(int(tail_s * 24000), np.int16)
    return np.concatenate((lead, audio, tail)).astype("<i2").tobytes()


async def stream_frames(send: Callable[[str], Awaitable[None]], audio: bytes, pace_s: float = 0.02) -> None:
    """Send `audio` as base64 20 ms frames, one every `pace_s` (real time by default)."""
    for start in range(0, len(audio), FRAME_BYTES):
        await send(base64.b64encode(audio[start : start + FRAME_BYTES]).decode("ascii"))
        await asyncio.sleep(pace_s)


def assert_spoken(engines: Engines, audio: bytes, transcript: str, rate: int = 24000) -> None:
    """The reply audio (PCM16 at `rate`) is speech, and Whisper hears (about) what its transcript says. (Audio a
    call may have cut mid-word is compared with the TTS chunks it came from instead: `assert_sent_speech` in
    tests/server/acs/support.py.)

    How long the reply is and what it says are the model's; that the audio says the transcript is koe's. The 40 %
    margin covers what Piper and Whisper write differently ("21°C" heard as "21 degrees Celsius").
    """
    assert transcript.strip(), "the reply has no transcript"
    assert audio, "the reply has no audio"
    pcm: Pcm = np.frombuffer(audio, dtype="<i2")
    # The padded call: the ear of a test should be Whisper at its most careful, whatever the fast path does.
    heard = engines.require("stt").transcribe_sync(resample(pcm, rate, 16000), padded=True).text
    assert heard, "Whisper heard nothing in the reply audio"
    assert wer(transcript, heard) <= 0.4, (transcript, heard)
