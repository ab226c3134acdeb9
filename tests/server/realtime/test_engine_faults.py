"""STT or TTS raising mid-turn (issue 14, must-hold 2): the Realtime client is told in its protocol, the session goes
on, and the next turn is served. The engines are the real ones, each wrapped to raise once where the test says: the
STT on its next transcription, the TTS after the first clause of a reply (mid-reply)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import pytest

from koe.audio.resample import resample
from koe.engines.base import SpeechChunk
from koe.engines.registry import Engines
from koe.protocols.realtime import Dialect
from tests.conftest import load_wav
from tests.engines.openai_standin import scripted_engines
from tests.server.acs.support import koe_server
from tests.server.realtime.support import realtime_settings
from tests.server.realtime.test_door import Client, open_client

pytestmark = [pytest.mark.models, pytest.mark.timeout(120)]


class InjectedFault(RuntimeError):
    """What a wrapped engine raises: an engine failing as a bug or a lost device would make it fail."""


@dataclass
class FlakySTT:
    inner: Any
    failures: int = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def transcribe(self, pcm: Any, **options: Any) -> Any:
        if self.failures:
            self.failures -= 1
            raise InjectedFault("the STT engine failed (injected)")
        return await self.inner.transcribe(pcm, **options)


@dataclass
class FlakyTTS:
    inner: Any
    failures: int = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def synthesize(self, text: str, voice: str | None = None) -> AsyncIterator[SpeechChunk]:
        fail = self.failures > 0
        self.failures -= fail
        async for chunk in self.inner.synthesize(text, voice):
            yield chunk
            if fail:
                raise InjectedFault("the TTS engine failed mid-reply (injected)")


def _speech_b64() -> str:
    pcm, rate = load_wav("short_16k.wav")
    return base64.b64encode(resample(pcm, rate, 24000).astype("<i2").tobytes()).decode()


async def _commit_speech(client: Client) -> list[dict[str, Any]]:
    start = len(client.seen)
    await client.send("input_audio_buffer.append", audio=_speech_b64())
    await client.send("input_audio_buffer.commit")
    while True:
        event = await client.recv(60)
        if event["type"] in (
            "conversation.item.input_audio_transcription.completed",
            "conversation.item.input_audio_transcription.failed",
        ):
            return client.seen[start:]


async def test_an_stt_failure_mid_turn_is_a_failed_transcription_and_the_next_turn_is_transcribed(
    engines: Engines, texts: dict[str, str]
) -> None:
    stt = FlakySTT(engines.stt, failures=1)
    async with koe_server(realtime_settings(), replace(engines, stt=stt)) as (base, _app):
        client = await open_client(f"ws{base[4:]}", Dialect.GA)
        session = {
            "type": "realtime",
            "output_modalities": ["text"],
            "audio": {"input": {"turn_detection": None, "transcription": {"model": "whisper-1"}}},
        }
        await client.send("session.update", session=session)
        await client.until("session.updated")
        failed = await _commit_speech(client)
        assert failed[-1]["type"] == "conversation.item.input_audio_transcription.failed"
        assert "failed" in failed[-1]["error"]["message"]
        again = await _commit_speech(client)
        assert again[-1]["type"] == "conversation.item.input_audio_transcription.completed"
        assert "weather" in again[-1]["transcript"].lower()
        await client.ws.close()


async def test_a_tts_failure_mid_reply_is_an_error_then_a_failed_response_and_the_next_reply_is_spoken(
    engines: Engines,
) -> None:
    async with scripted_engines(engines) as scripted:
        tts = FlakyTTS(scripted.tts, failures=1)
        async with koe_server(realtime_settings(), replace(scripted, tts=tts)) as (base, _app):
            client = await open_client(f"ws{base[4:]}", Dialect.GA)
            for attempt in ("failing", "served"):
                item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "A story?"}]}
                await client.send("conversation.item.create", item=item)
                start = len(client.seen)
                await client.send("response.create", response={"output_modalities": ["audio"]})
                done = await client.until("response.done", 60)
                events = client.seen[start:]
                kinds = [event["type"] for event in events]
                if attempt == "failing":
                    assert "response.output_audio.delta" in kinds  # it failed mid-reply, after speaking
                    assert "error" in kinds
                    assert done["response"]["status"] == "failed"
                else:
                    assert "error" not in kinds
                    assert done["response"]["status"] in ("completed", "incomplete")
                    assert "response.output_audio.delta" in kinds
            await client.ws.close()
