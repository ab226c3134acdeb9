"""A door node whose STT and TTS are a koe model node (docs/cluster.md, "Model servers apart"): a Realtime
transcription goes through the remote STT, /v1/audio/speech through the remote TTS, a spoken Realtime reply takes
its words (remote LLM) and its voice from the model node, and with the model node down
each door answers in its own protocol (Realtime `conversation.item.input_audio_transcription.failed` on a socket
that stays open; the REST API 503 with OpenAI's error body), and /healthz says which engine is not ready."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

from koe.audio.resample import resample
from koe.config import load_settings
from koe.engines.registry import Engines, load_engines
from tests.engines.openai_standin import REPLY_WORDS, scripted_engines
from tests.engines.remote_support import MODEL_KEY, dead_url, door_engines, model_node, remote_overrides
from tests.server.acs.support import koe_server
from tests.server.realtime.support import API_KEY, assert_spoken, speech_24k, stream_frames
from tests.wer import wer

TRANSCRIBE_ONLY = {
    "input_audio_transcription": {"model": "whisper-1"},
    "turn_detection": {"type": "server_vad", "silence_duration_ms": 400, "create_response": False},
}


@pytest.fixture(scope="module")
async def model_url(engines: Engines) -> AsyncIterator[str]:
    async with model_node(engines) as base:
        yield base


def _door_settings(base_url: str) -> Any:
    return load_settings(
        overrides={"server": {"api_keys": [API_KEY]}, "sora": {"enabled": False}, **remote_overrides(base_url)}
    )


async def _recv_until(ws: ClientConnection, kinds: set[str], within_s: float = 30.0) -> dict[str, Any]:
    while True:
        event: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), within_s))
        if event["type"] in kinds:
            return event


async def _transcribe_once(base: str) -> dict[str, Any]:
    """One utterance through the door node's Realtime door; the transcription's completed or failed event."""
    url = f"ws{base[4:]}/voice-live/realtime?model=gpt-4o"
    async with ws_connect(url, additional_headers={"api-key": API_KEY}) as ws:
        await _recv_until(ws, {"session.created"})
        await ws.send(json.dumps({"type": "session.update", "session": TRANSCRIBE_ONLY}))
        await _recv_until(ws, {"session.updated"})
        append = lambda b64: ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": b64}))  # noqa: E731
        sender = asyncio.create_task(stream_frames(append, speech_24k("short_48k.wav"), pace_s=0.0))
        done = await _recv_until(
            ws,
            {
                "conversation.item.input_audio_transcription.completed",
                "conversation.item.input_audio_transcription.failed",
            },
        )
        await sender
        # The session keeps serving after either outcome.
        await ws.send(json.dumps({"type": "session.update", "session": {"instructions": "still here"}}))
        assert (await _recv_until(ws, {"session.updated", "error"}))["type"] == "session.updated"
        return done


async def test_the_model_node_serves_no_door(model_url: str) -> None:
    with pytest.raises(InvalidStatus):
        await ws_connect(f"ws{model_url[4:-3]}/v1/realtime?model=x", additional_headers={"api-key": MODEL_KEY})
    async with httpx.AsyncClient() as client:
        models = (await client.get(f"{model_url}/models", headers={"Authorization": f"Bearer {MODEL_KEY}"})).json()
    assert {m["koe_kind"] for m in models["data"]} >= {"transcription", "voice"}


async def test_a_realtime_transcription_goes_through_the_model_node(
    model_url: str, engines: Engines, texts: dict[str, str]
) -> None:
    door = await asyncio.to_thread(door_engines, model_url, engines)
    async with koe_server(_door_settings(model_url), door) as (base, _app):
        done = await _transcribe_once(base)
        assert done["type"] == "conversation.item.input_audio_transcription.completed", done
        assert wer(texts["short"], done["transcript"]) <= 0.1, done["transcript"]
        async with httpx.AsyncClient() as client:
            health = (await client.get(f"{base}/healthz")).json()
        assert health["status"] == "ok" and health["engines"]["stt"]["name"].startswith("remote:whisper-1@")


async def test_speech_on_the_door_node_comes_from_the_model_node(model_url: str, engines: Engines) -> None:
    door = await asyncio.to_thread(door_engines, model_url, engines)
    async with koe_server(_door_settings(model_url), door) as (base, _app):
        api = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=API_KEY, max_retries=0, timeout=60)
        text = "Sure, I can help with that."
        response = await api.audio.speech.create(model="tts-1", voice="alloy", input=text, response_format="pcm")
        pcm = np.frombuffer(response.content, dtype="<i2")
        heard = engines.require("stt").transcribe_sync(resample(pcm, 24000, 16000)).text  # type: ignore[attr-defined]
        assert wer(text, heard) <= 0.3, heard
        voices = {m.id for m in (await api.models.list()).data}
        assert "jf_alpha" in voices  # learned from the model node
        await api.close()


async def test_a_spoken_reply_takes_its_words_and_voice_from_the_model_node(engines: Engines) -> None:
    # Every model remote: the LLM writes the reply on the model node and its voice comes from there too. The model
    # node's own LLM is the scripted stand-in, so the words are known (SmolLM2 once answered in French, which no
    # English ear can check) and the door node's reply must be exactly them.
    async with scripted_engines(engines, REPLY_WORDS) as scripted, model_node(scripted) as model_url:
        await _speak_through_the_model_node(model_url, engines)


async def _speak_through_the_model_node(model_url: str, engines: Engines) -> None:
    door = await asyncio.to_thread(door_engines, model_url, engines)
    llm = {"backend": "remote", "base_url": model_url, "api_key": MODEL_KEY, "max_tokens": 24, "temperature": 0.0}
    door.llm = load_engines(load_settings(overrides={"llm": llm}), ["llm"]).llm
    assert door.llm is not None and door.llm.name.startswith("openai-compatible:")
    async with (
        koe_server(_door_settings(model_url), door) as (base, _app),
        ws_connect(f"ws{base[4:]}/v1/realtime?model=gpt-realtime", additional_headers={"api-key": API_KEY}) as ws,
    ):
        await _recv_until(ws, {"session.created"})
        question = {"type": "input_text", "text": "What is the capital of France?"}
        item = {"type": "message", "role": "user", "content": [question]}
        await ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
        await ws.send(json.dumps({"type": "response.create", "response": {"output_modalities": ["audio"]}}))
        audio = bytearray()
        transcript = ""
        while True:
            event = await _recv_until(
                ws, {"response.output_audio.delta", "response.output_audio_transcript.done", "response.done"}, 60
            )
            if event["type"] == "response.output_audio.delta":
                audio.extend(base64.b64decode(event["delta"]))
            elif event["type"] == "response.output_audio_transcript.done":
                transcript = event["transcript"]
            else:
                break
    assert event["response"]["status"] == "completed", event["response"]
    assert transcript == "".join(REPLY_WORDS)  # the model node's words
    assert_spoken(engines, bytes(audio), transcript)  # in the model node's voice, saying them


async def test_the_model_node_down_is_each_doors_own_error(engines: Engines) -> None:
    gone = dead_url()
    door = await asyncio.to_thread(door_engines, gone, engines)
    async with koe_server(_door_settings(gone), door) as (base, _app):
        failed = await _transcribe_once(base)
        assert failed["type"] == "conversation.item.input_audio_transcription.failed"
        assert "cannot reach the STT endpoint" in failed["error"]["message"]
        api = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=API_KEY, max_retries=0, timeout=60)
        with pytest.raises(openai.APIStatusError) as refused:
            await api.audio.speech.create(model="tts-1", voice="alloy", input="Hello.", response_format="pcm")
        assert refused.value.status_code == 503 and "cannot reach the TTS endpoint" in refused.value.message
        await api.close()
        async with httpx.AsyncClient() as client:
            health = (await client.get(f"{base}/healthz")).json()
        assert health["status"] == "degraded"
        assert not health["engines"]["stt"]["ready"] and not health["engines"]["tts"]["ready"]
