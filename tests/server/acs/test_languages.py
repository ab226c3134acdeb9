"""Languages through the ACS door (issue 12): a call's language is its transport URL's `?language=` (else
`acs.language`), transcripts reach subscribers and webhooks as UTF-8 text unescaped, a language koe cannot hear
closes the socket with 1008 before any audio, and the emulator passes Call Automation's
`transcriptionOptions.locale` on as that parameter."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from koe.audio.files import read_audio
from koe.engines.registry import Engines
from koe.sim.acs._rest import _media_options
from koe.sim.acs.media import MediaOptions, MediaStream
from koe.sim.acs.participants import CallAudio, Participant, phone_raw_id
from tests.conftest import LANGUAGE_AUDIO
from tests.engines.openai_standin import scripted_engines
from tests.server.acs.support import RecordingTTS, acs_settings, assert_sent_speech, koe_server, record_outbound
from tests.wer import cer

MAX_CER = 0.15
CLIPS = ("ja_weather", "ja_train")


async def _frames(url: str, into: list[str]) -> None:
    async with connect(url) as ws:
        async for frame in ws:
            assert isinstance(frame, str)
            into.append(frame)


@pytest.mark.models
@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["query", "config"])
async def test_a_call_transcribed_in_japanese(engines: Engines, language_texts: dict[str, str], how: str) -> None:
    speech = [read_audio(LANGUAGE_AUDIO / f"{clip}.wav", 16000) for clip in CLIPS]
    people = [Participant(phone_raw_id(1), speech[0], 0), Participant(phone_raw_id(1), speech[1], 3500)]
    audio = CallAudio(people, 16000, mixed=True, tail_ms=800)
    settings = acs_settings(mode="transcribe", language="ja-JP" if how == "config" else "en-US")
    call_id = f"cc-ja-{how}"
    async with koe_server(settings, engines) as (base, _app):
        ws_base = base.replace("http", "ws")
        media = f"{ws_base}/acs/media" + ("?language=ja-JP" if how == "query" else "")
        stream = MediaStream(
            MediaOptions(media, 16000, call_connection_id=call_id, speed=4.0, bidirectional=False), audio
        )
        call = asyncio.create_task(stream.run())
        await stream.started.wait()
        frames: list[str] = []
        await asyncio.sleep(0.05)
        await asyncio.wait_for(_frames(f"{ws_base}/v1/calls/{call_id}/events", frames), 60)
        report = await call
    assert report.violations == []
    finals = [event for event in map(json.loads, frames) if event["type"] == "transcript.completed"]
    assert [event["language"] for event in finals] == ["ja"] * len(finals)
    heard = "".join(event["text"] for event in finals)
    assert cer("".join(language_texts[clip] for clip in CLIPS), heard) <= MAX_CER, heard
    raw = [frame for frame in frames if '"transcript.completed"' in frame]
    assert all("\\u" not in frame for frame in raw) and any(event["text"] in raw[0] for event in finals[:1])


@pytest.mark.models
@pytest.mark.parametrize("language", ["xx-YY", "ja-JP,qq"])
async def test_an_unsupported_language_closes_before_any_audio(engines: Engines, language: str) -> None:
    async with koe_server(acs_settings(mode="transcribe"), engines) as (base, _app):
        ws_base = base.replace("http", "ws")
        async with connect(f"{ws_base}/acs/media?language={language}") as ws:
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == 1008
        assert ws.close_reason is not None and ws.close_reason.startswith("unsupported_language: ")
        # The door keeps serving: an English call still connects and is not closed at once.
        async with connect(f"{ws_base}/acs/media?language=en-US") as ok:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(ok.recv(), 0.3)


@pytest.mark.models
@pytest.mark.timeout(120)
async def test_an_agent_call_in_japanese_is_answered_by_the_japanese_voice(
    engines: Engines, language_texts: dict[str, str]
) -> None:
    """The agent's reply (a stand-in LLM answering in Japanese: the embedded one speaks English only) is spoken by
    the voice of the call's language, and what the call was sent is that voice's speech."""
    reply = ["明日は", "晴れ", "でしょう。"]
    speech = read_audio(LANGUAGE_AUDIO / "ja_weather.wav", 16000)
    audio = CallAudio([Participant(phone_raw_id(1), speech)], 16000, tail_ms=200)
    async with scripted_engines(engines, reply) as scripted:
        tts = RecordingTTS(scripted.tts)
        async with koe_server(acs_settings(mode="agent"), replace(scripted, tts=tts)) as (base, app):
            url = base.replace("http", "ws") + "/acs/media?language=ja-JP"
            options = MediaOptions(
                url, 16000, call_connection_id="agent-ja", speed=2.0, reply_timeout_ms=30000, linger_ms=2500
            )
            stream = MediaStream(options, audio)
            outbound = record_outbound(stream)
            report = await stream.run()
            call = app.state.calls.get("agent-ja")
    assert report.violations == []
    assert call is not None
    # A loaded machine may hear the question as two turns (a sender that stalls past the silence window ends a
    # turn, as a call's silence would): the question is heard once, in order, either way.
    asked = "".join(e["text"] for e in call.recent if e["type"] == "transcript.completed")
    assert cer(language_texts["ja_weather"], asked) <= MAX_CER, asked
    assert tts.voices and all(voice is not None for voice in tts.voices), tts.voices
    assert {tts.voice_info(voice).language.split("-")[0] for voice in tts.voices if voice} == {"ja"}, tts.voices
    sent = assert_sent_speech(bytes(outbound), tts.chunks, 16000)
    assert all(text.strip() in "".join(reply) for text in sent), sent


def test_the_emulator_passes_the_transcription_locale_on() -> None:
    media: dict[str, Any] = {"transportType": "websocket", "transportUrl": "wss://koe/acs/media?mode=transcribe"}
    media |= {"audioChannelType": "mixed"}
    passed = _media_options(media, {"transportType": "websocket", "locale": "ja-JP", "startTranscription": True})
    assert passed is not None and passed.transport_url == "wss://koe/acs/media?mode=transcribe&language=ja-JP"
    own = _media_options({**media, "transportUrl": "wss://koe/acs/media?language=zh-CN"}, {"locale": "ja-JP"})
    assert own is not None and own.transport_url == "wss://koe/acs/media?language=zh-CN"  # the URL's own wins
    plain = _media_options(media, None)
    assert plain is not None and plain.transport_url == media["transportUrl"]
