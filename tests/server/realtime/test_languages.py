"""Languages through the Realtime door (issue 12): the input transcription's `language` is the session's, Voice
Live's multi-language list detects, voice names map to the voice of that language, and a language koe cannot hear
is an `error` event that leaves the session as it was.

The spoken Japanese turn uses real Japanese fixture speech in and a Japanese reply out. The embedded LLM answers in
English only, so the reply comes from the OpenAI-compatible stand-in (`llm.backend = "remote"` as a deployment
would point it at a multilingual model), scripted to answer one Japanese sentence; Kokoro speaks it, and Whisper
base must hear it back as Japanese (CER with a margin: Kokoro's speech measured 0-6% on these clips).
"""

from __future__ import annotations

import asyncio
import base64
import json

import numpy as np
import pytest

from koe.audio.files import read_audio
from koe.audio.resample import resample
from koe.engines.registry import Engines
from koe.protocols.realtime import Dialect, Voice
from koe.server.realtime.mapping import voice
from tests.conftest import LANGUAGE_AUDIO
from tests.engines.openai_standin import scripted_engines
from tests.server.acs.support import koe_server
from tests.server.realtime.support import realtime_settings, stream_frames
from tests.server.realtime.test_door import Client, open_client
from tests.wer import cer

pytestmark = pytest.mark.models

REPLY = ["明日は", "晴れ", "でしょう。"]
MAX_CER = 0.3


def _speech_24k(clip: str, tail_s: float = 1.5) -> bytes:
    pcm = resample(read_audio(LANGUAGE_AUDIO / f"{clip}.wav", 16000), 16000, 24000)
    silence = np.zeros(int(0.4 * 24000), np.int16)
    tail = np.zeros(int(tail_s * 24000), np.int16)
    return np.concatenate((silence, pcm, tail)).astype("<i2").tobytes()


async def _speak(client: Client, clip: str) -> asyncio.Task[None]:
    async def append(b64: str) -> None:
        await client.send("input_audio_buffer.append", audio=b64)

    return asyncio.create_task(stream_frames(append, _speech_24k(clip), pace_s=0.0))


async def test_a_spoken_turn_in_japanese(engines: Engines, language_texts: dict[str, str]) -> None:
    async with scripted_engines(engines, REPLY) as scripted, koe_server(realtime_settings(), scripted) as (base, _):
        client = await open_client(f"ws{base[4:]}", Dialect.AZURE)
        await client.send(
            "session.update",
            session={
                "input_audio_transcription": {"model": "azure-speech", "language": "ja-JP"},
                "voice": {"type": "azure-standard", "name": "ja-JP-NanamiNeural"},
                "turn_detection": {"type": "server_vad", "silence_duration_ms": 400},
            },
        )
        updated = await client.until("session.updated")
        assert updated["session"]["input_audio_transcription"]["language"] == "ja-JP"
        sender = await _speak(client, "ja_weather")
        completed = await client.until("conversation.item.input_audio_transcription.completed")
        audio = bytearray()
        while (event := await client.recv())["type"] != "response.done":
            if event["type"] == "response.audio.delta":
                audio += base64.b64decode(event["delta"])
        await sender
        await client.ws.close()
    assert cer(language_texts["ja_weather"], completed["transcript"]) <= MAX_CER, completed["transcript"]
    assert completed["languages"] == [{"code": "ja"}]
    assert " " not in completed["transcript"]
    spoken = event["response"]["output"][0]["content"][0]["transcript"]
    assert spoken == "".join(REPLY)
    reply = resample(np.frombuffer(bytes(audio), "<i2"), 24000, 16000)
    heard = await engines.require("stt").transcribe(reply, language="auto")
    assert heard.language == "ja"  # detected: Whisper base hears the reply as Japanese by itself
    assert cer(spoken, heard.text) <= MAX_CER, heard.text
    (warning,) = [e["warning"]["message"] for e in client.seen if e["type"] == "warning"]
    assert "'ja-JP-NanamiNeural' is not installed here; 'j" in warning  # a local Japanese voice speaks for Nanami


async def test_voice_lives_multi_language_form_detects_each_utterance(engines: Engines) -> None:
    """`en,ja,zh` detects the language of each utterance, and with OpenAI's voice name the reply's own text picks
    the voice that speaks it (the stand-in answers in Japanese, whatever it was asked)."""
    async with scripted_engines(engines, REPLY) as scripted, koe_server(realtime_settings(), scripted) as (base, _):
        client = await open_client(f"ws{base[4:]}", Dialect.AZURE)
        await client.send(
            "session.update",
            session={
                "input_audio_transcription": {"model": "azure-speech", "language": "en,ja,zh"},
                "voice": "alloy",
                "turn_detection": {"type": "server_vad", "silence_duration_ms": 400},
            },
        )
        await client.until("session.updated")
        sender = await _speak(client, "zh_weather")
        completed = await client.until("conversation.item.input_audio_transcription.completed")
        audio = bytearray()
        while (event := await client.recv())["type"] != "response.done":
            if event["type"] == "response.audio.delta":
                audio += base64.b64decode(event["delta"])
        await sender
        await client.ws.close()
    assert completed["languages"] == [{"code": "zh"}]
    assert cer("今天天气怎么样", completed["transcript"]) <= MAX_CER
    reply = resample(np.frombuffer(bytes(audio), "<i2"), 24000, 16000)
    heard = await engines.require("stt").transcribe(reply, language="auto")
    assert heard.language == "ja" and cer("".join(REPLY), heard.text) <= MAX_CER, heard.text


STORY_JA = (
    "昔々、海の近くの小さな村に、一匹の竜が住んでいました。"
    "竜は毎朝、港の上を飛んで、漁に出る舟を数えていました。"
    "村の子どもたちは浜から手を振り、竜は温かい煙で答えました。"
    "ある冬、海が凍って、舟は何週間も港を出られませんでした。"
)


async def test_barge_in_truncates_a_japanese_reply_to_what_was_heard(engines: Engines) -> None:
    """Interruption works the same in Japanese: the reply stops, and the item keeps the part of the story heard."""
    pieces = [clause + "。" for clause in STORY_JA.split("。") if clause]
    async with scripted_engines(engines, pieces) as scripted, koe_server(realtime_settings(), scripted) as (base, _):
        client = await open_client(f"ws{base[4:]}", Dialect.AZURE)
        await client.send(
            "session.update",
            session={
                "input_audio_transcription": {"model": "azure-speech", "language": "ja-JP"},
                "turn_detection": {"type": "server_vad", "silence_duration_ms": 400, "auto_truncate": True},
            },
        )
        await client.until("session.updated")

        async def append(b64: str) -> None:
            await client.send("input_audio_buffer.append", audio=b64)

        await stream_frames(append, _speech_24k("ja_weather", tail_s=0.6), pace_s=0.0)
        await client.until("response.audio.delta", 60)
        await asyncio.sleep(0.6)  # the listener hears a little of the reply
        interrupting = asyncio.create_task(stream_frames(append, _speech_24k("ja_booking", tail_s=0.6)))
        done = await client.until("response.done", 60)
        truncated = await client.until("conversation.item.truncated")
        await client.send("conversation.item.retrieve", item_id=truncated["item_id"])
        item = (await client.until("conversation.item.retrieved"))["item"]
        interrupting.cancel()
        await client.ws.close()
    assert done["response"]["status"] == "cancelled"
    assert done["response"]["status_details"]["reason"] == "turn_detected"
    spoken = done["response"]["output"][0]["content"][0]["transcript"]
    heard = item["content"][0]["transcript"]
    assert truncated["audio_end_ms"] > 0
    assert STORY_JA.startswith(spoken) and STORY_JA.startswith(heard), (spoken, heard)
    assert len(heard) <= len(spoken) < len(STORY_JA)
    assert " " not in spoken


@pytest.mark.parametrize("dialect", [Dialect.GA, Dialect.AZURE])
async def test_an_unsupported_language_is_an_error_event(engines: Engines, dialect: Dialect) -> None:
    transcription = {"model": "whisper-1", "language": "xx"}
    session = (
        {"type": "realtime", "audio": {"input": {"transcription": transcription}}}
        if dialect is Dialect.GA
        else {"input_audio_transcription": transcription}
    )
    param = (
        "session.audio.input.transcription.language"
        if dialect is Dialect.GA
        else "session.input_audio_transcription.language"
    )
    async with koe_server(realtime_settings(), engines) as (base, _):
        client = await open_client(f"ws{base[4:]}", dialect)
        await client.ws.send(json.dumps({"type": "session.update", "event_id": "ev_1", "session": session}))
        error = await client.until("error")
        assert error["error"]["code"] == "invalid_value"
        assert error["error"]["param"] == param
        assert error["error"]["event_id"] == "ev_1"
        assert "'xx'" in error["error"]["message"]
        # The session keeps its settings and goes on serving.
        await client.send("session.update", session={"instructions": "Be brief."})
        updated = await client.until("session.updated")
        await client.ws.close()
    assert not [e for e in client.seen if e["type"] == "session.updated" and e is not updated]
    rendered = updated["session"]
    transcription_now = (
        rendered["audio"]["input"]["transcription"] if dialect is Dialect.GA else rendered["input_audio_transcription"]
    )
    assert transcription_now is None or transcription_now.get("language") != "xx"


def test_voice_names_speak_the_sessions_language(engines: Engines) -> None:
    tts = engines.require("tts")
    japanese = tts.voice_for("ja")
    assert japanese is not None
    assert voice(Voice("alloy"), tts, "ja-JP") == (japanese, None)
    assert voice(Voice("alloy"), tts, None) == (None, None)  # no language named either: the reply's text picks
    assert voice(Voice("alloy"), tts, "auto") == (None, None)  # each reply's text picks its voice
    assert voice(Voice("ja-JP-NanamiNeural", "azure-standard"), tts, "en")[0] == japanese
    # A multilingual Azure voice speaks the session's language, as on Azure.
    assert voice(Voice("en-US-Ava:DragonHDLatestNeural", "azure-standard"), tts, "ja")[0] == japanese
    chosen, warning = voice(Voice("nobody"), tts, "ja")
    assert chosen == japanese and warning is not None and "nobody" in warning.message
