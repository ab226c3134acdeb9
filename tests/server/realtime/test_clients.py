"""The Realtime door with real clients, unmodified: each completes a whole spoken turn with fixture speech sent at
real-time pace. Passing means the user transcript matches the fixture and a spoken reply arrives whose audio Whisper
hears as its transcript. What the reply says, and how long it is, are the model's own."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import uuid
from collections.abc import AsyncIterator

import pytest
from openai import AsyncOpenAI
from websockets.asyncio.client import connect as ws_connect

from koe.engines.registry import Engines
from tests.engines.openai_standin import REPLY_WORDS, scripted_engines
from tests.server.acs.support import koe_server
from tests.server.realtime.support import API_KEY, assert_spoken, realtime_settings, speech_24k, stream_frames
from tests.wer import wer

TURN_TIMEOUT_S = 45


@pytest.fixture(scope="module")
async def base_url(engines: Engines) -> AsyncIterator[str]:
    # The LLM is the scripted stand-in: these tests are of the clients and the protocol, and SmolLM2's answer (once
    # French words that no English ear could check) is no part of either. VAD, Whisper and Piper are the real ones.
    async with (
        scripted_engines(engines, REPLY_WORDS) as scripted,
        koe_server(realtime_settings(), scripted) as (
            base,
            _app,
        ),
    ):
        yield base


async def test_voice_live_sdk(base_url: str, engines: Engines, texts: dict[str, str]) -> None:
    from azure.ai.voicelive.aio import connect
    from azure.ai.voicelive.models import (
        AudioInputTranscriptionOptions,
        AzureStandardVoice,
        InputAudioFormat,
        Modality,
        OutputAudioFormat,
        RequestSession,
        ServerEventType,
        ServerVad,
    )
    from azure.core.credentials import AzureKeyCredential

    audio = bytearray()
    user, said = "", ""
    async with connect(endpoint=base_url, credential=AzureKeyCredential(API_KEY), model="gpt-4o") as conn:
        await conn.session.update(
            session=RequestSession(
                modalities=[Modality.TEXT, Modality.AUDIO],
                instructions="You are a helpful assistant. Answer in one short sentence.",
                voice=AzureStandardVoice(name="en-US-AvaNeural"),
                input_audio_format=InputAudioFormat.PCM16,
                output_audio_format=OutputAudioFormat.PCM16,
                input_audio_transcription=AudioInputTranscriptionOptions(model="azure-speech", language="en-US"),
                turn_detection=ServerVad(threshold=0.5, prefix_padding_ms=300, silence_duration_ms=400),
            )
        )
        sender = asyncio.create_task(stream_frames(lambda b64: conn.input_audio_buffer.append(audio=b64), speech_24k()))

        async def receive() -> None:
            nonlocal user, said
            async for event in conn:
                kind = event.type
                if kind == ServerEventType.RESPONSE_AUDIO_DELTA:
                    audio.extend(event.delta)  # the SDK already decoded the base64
                elif kind == ServerEventType.CONVERSATION_ITEM_INPUT_AUDIO_TRANSCRIPTION_COMPLETED:
                    user = event.transcript
                elif kind == ServerEventType.RESPONSE_AUDIO_TRANSCRIPT_DONE:
                    said = event.transcript
                elif kind == ServerEventType.ERROR:
                    raise AssertionError(f"error event: {event.error}")
                elif kind == ServerEventType.RESPONSE_DONE:
                    assert event.response.status == "completed"  # no cap of the client's: never incomplete
                    return

        await asyncio.wait_for(receive(), TURN_TIMEOUT_S)
        sender.cancel()
    assert wer(texts["short"], user) <= 0.1
    assert_spoken(engines, bytes(audio), said)


@pytest.mark.parametrize("beta", [False, True], ids=["ga", "beta"])
async def test_openai_sdk(base_url: str, engines: Engines, texts: dict[str, str], beta: bool) -> None:
    client = AsyncOpenAI(api_key=API_KEY, base_url=f"{base_url}/v1", websocket_base_url=f"ws{base_url[4:]}/v1")
    realtime = client.beta.realtime if beta else client.realtime
    prefix = "response.audio" if beta else "response.output_audio"
    if beta:
        session: dict[str, object] = {
            "modalities": ["text", "audio"],
            "voice": "alloy",
            "input_audio_transcription": {"model": "whisper-1"},
            "turn_detection": {"type": "server_vad", "silence_duration_ms": 400},
        }
    else:
        session = {
            "type": "realtime",
            "output_modalities": ["audio"],
            "audio": {
                "input": {
                    "transcription": {"model": "whisper-1", "language": "en"},
                    "turn_detection": {"type": "server_vad", "silence_duration_ms": 400},
                },
                "output": {"voice": "alloy"},
            },
        }
    audio = bytearray()
    user, said = "", ""
    async with realtime.connect(model="gpt-realtime") as conn:  # type: ignore[attr-defined]
        await conn.session.update(session=session)
        sender = asyncio.create_task(stream_frames(lambda b64: conn.input_audio_buffer.append(audio=b64), speech_24k()))

        async def receive() -> None:
            nonlocal user, said
            async for event in conn:
                if event.type == f"{prefix}.delta":
                    audio.extend(base64.b64decode(event.delta))
                elif event.type == "conversation.item.input_audio_transcription.completed":
                    user = event.transcript
                elif event.type == f"{prefix}_transcript.done":
                    said = event.transcript
                elif event.type == "error":
                    raise AssertionError(f"error event: {event.error}")
                elif event.type == "response.done":
                    assert event.response.status == "completed"  # no cap of the client's: never incomplete
                    return

        await asyncio.wait_for(receive(), TURN_TIMEOUT_S)
        sender.cancel()
    assert wer(texts["short"], user) <= 0.1
    assert_spoken(engines, bytes(audio), said)


async def test_voice_live_quickstart_raw_websocket(base_url: str, engines: Engines) -> None:
    """Exactly what the Voice Live raw-websocket quickstart does: its session.update, 20 ms frames forever, no
    commit, no response.create, and it reads only session.created, response.audio.delta and error (the test also
    keeps the reply's transcript, to check the audio against it, and ends at response.done: a busy machine may leave
    gaps of seconds between a reply's clauses, so silence on the socket does not mean the reply is over)."""
    url = f"ws{base_url[4:]}/voice-live/realtime?api-version=2025-05-01-preview&model=gpt-4o"
    headers = {"x-ms-client-request-id": str(uuid.uuid4()), "api-key": API_KEY}
    audio = bytearray()
    said: list[str] = []
    async with ws_connect(url, additional_headers=headers) as ws:
        await ws.send(
            json.dumps(
                {
                    "type": "session.update",
                    "session": {
                        "instructions": "You are a helpful AI assistant responding in natural, engaging language.",
                        "turn_detection": {
                            "type": "azure_semantic_vad",
                            "threshold": 0.3,
                            "prefix_padding_ms": 200,
                            "silence_duration_ms": 200,
                            "remove_filler_words": False,
                            "end_of_utterance_detection": {
                                "model": "semantic_detection_v1",
                                "threshold": 0.01,
                                "timeout": 2,
                            },
                        },
                        "input_audio_noise_reduction": {"type": "azure_deep_noise_suppression"},
                        "input_audio_echo_cancellation": {"type": "server_echo_cancellation"},
                        "voice": {
                            "name": "en-US-Ava:DragonHDLatestNeural",
                            "type": "azure-standard",
                            "temperature": 0.8,
                        },
                    },
                    "event_id": "",
                }
            )
        )

        async def send(b64: str) -> None:
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": b64, "event_id": ""}))

        async def forever() -> None:
            await stream_frames(send, speech_24k(tail_s=0.0))
            while True:  # the microphone never stops
                await stream_frames(send, bytes(24000 * 2))

        sender = asyncio.create_task(forever())
        session_id = None
        try:
            while True:
                event = json.loads(await asyncio.wait_for(ws.recv(), TURN_TIMEOUT_S))
                if event["type"] == "session.created":
                    session_id = event["session"]["id"]
                elif event["type"] == "response.audio.delta":
                    audio.extend(base64.b64decode(event["delta"]))
                elif event["type"] == "response.done" and audio:
                    break
                elif event["type"] == "response.audio_transcript.done":
                    said.append(event["transcript"])
                elif event["type"] == "error":
                    raise AssertionError(f"the quickstart stops on any error: {event['error']}")
        finally:
            sender.cancel()
    assert session_id
    assert_spoken(engines, bytes(audio), " ".join(said))


async def test_openai_agents_realtime_runner(base_url: str, engines: Engines, texts: dict[str, str]) -> None:
    """openai-agents validates every server event strictly against the GA schema; any failure is an error event."""
    from agents.realtime import RealtimeAgent, RealtimeRunner

    failures: list[str] = []

    class _Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            failures.append(record.getMessage())

    catcher = _Catch(level=logging.ERROR)
    logging.getLogger("openai.agents").addHandler(catcher)
    agent = RealtimeAgent(name="koe-test", instructions="You are a helpful assistant. Answer in one short sentence.")
    runner = RealtimeRunner(agent)
    model_config = {
        "url": f"ws{base_url[4:]}/v1/realtime?model=gpt-realtime",
        "api_key": API_KEY,
        "initial_model_settings": {
            "input_audio_transcription": {"model": "whisper-1"},
            "turn_detection": {"type": "server_vad", "silence_duration_ms": 400},
        },
    }
    audio = bytearray()
    errors: list[object] = []
    history_texts: list[str] = []
    said: list[str] = []
    history: list[object] = []
    try:
        session = await runner.run(model_config=model_config)  # type: ignore[arg-type]
        async with session:
            pcm = speech_24k()

            async def send(b64: str) -> None:
                await session.send_audio(base64.b64decode(b64))

            sender = asyncio.create_task(stream_frames(send, pcm))

            async def receive() -> None:
                async for event in session:
                    if event.type == "audio":
                        audio.extend(event.audio.data)
                    elif event.type == "error":
                        errors.append(event.error)
                    elif event.type == "raw_model_event" and event.data.type == "error":
                        errors.append(event.data)
                    elif event.type == "history_updated":
                        history[:] = event.history
                    elif event.type == "history_added":
                        history.append(event.item)
                    elif event.type == "audio_end":
                        done.set()

            done = asyncio.Event()

            reader = asyncio.create_task(receive())
            await asyncio.wait_for(done.wait(), TURN_TIMEOUT_S)
            await asyncio.sleep(1.0)  # the history catches up with the transcripts
            reader.cancel()
            for item in history:
                for part in getattr(item, "content", []) or []:
                    text = getattr(part, "transcript", None) or getattr(part, "text", None)
                    if text:
                        history_texts.append(text)
                        if getattr(item, "role", None) == "assistant":
                            said.append(text)
            sender.cancel()
    finally:
        logging.getLogger("openai.agents").removeHandler(catcher)
    assert not errors, errors
    assert not [f for f in failures if "validate" in f.lower()], failures
    assert any(wer(texts["short"], text) <= 0.1 for text in history_texts), history_texts
    assert_spoken(engines, bytes(audio), " ".join(said))
