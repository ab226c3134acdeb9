"""The Realtime door's behaviour on the wire: handshake and keys, errors that keep the socket open, text and
function-call turns, conversation items, G.711, pings, and barge-in. Every server event is validated strictly
against its dialect's schema (the openai unions, as openai-agents does; the Voice Live SDK for Azure)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

from koe.audio.g711 import ulaw_encode
from koe.audio.resample import resample
from koe.engines.registry import Engines
from koe.protocols.realtime import Dialect
from koe.voice.playback import OUTPUT_LEAD_MS
from tests.conftest import load_wav
from tests.engines.openai_standin import STORY, pieces, scripted_engines
from tests.forced_call import CALL_TOKENS, WEATHER_PARAMETERS, assert_city_arguments
from tests.protocols.realtime.conftest import check_event
from tests.server.acs.support import koe_server
from tests.server.realtime.support import API_KEY, realtime_settings, speech_24k, stream_frames
from tests.wer import wer

MAX_FRAME_BYTES = 1024 * 1024
AZURE_ONLY_EVENTS = {"warning"}
"""Voice Live events that no openai union has; the Voice Live SDK's typed models check them."""
PATHS = {Dialect.GA: "/v1/realtime?model=gpt-realtime", Dialect.AZURE: "/voice-live/realtime?model=gpt-4o"}


@pytest.fixture(scope="module")
async def base_url(engines: Engines) -> AsyncIterator[str]:
    async with koe_server(realtime_settings(path_prefix="/prefix"), engines) as (base, _app):
        yield f"ws{base[4:]}"


class Client:
    """A raw WebSocket client that validates every event it receives."""

    def __init__(self, ws: ClientConnection, dialect: Dialect) -> None:
        self.ws = ws
        self.dialect = dialect
        self.seen: list[dict[str, Any]] = []

    async def send(self, kind: str, **fields: Any) -> None:
        await self.ws.send(json.dumps({"type": kind, **fields}))

    async def recv(self, within_s: float = 30.0) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.ws.recv(), within_s)
        assert isinstance(raw, str) and len(raw.encode()) < MAX_FRAME_BYTES
        event: dict[str, Any] = json.loads(raw)
        check_event(event, self.dialect, openai_union=event["type"] not in AZURE_ONLY_EVENTS)
        self.seen.append(event)
        return event

    async def until(self, kind: str, within_s: float = 30.0) -> dict[str, Any]:
        while True:
            event = await self.recv(within_s)
            if event["type"] == kind:
                return event


async def open_client(base_url: str, dialect: Dialect, headers: dict[str, str] | None = None) -> Client:
    ws = await ws_connect(f"{base_url}{PATHS[dialect]}", additional_headers=headers or {"api-key": API_KEY})
    client = Client(ws, dialect)
    assert (await client.recv())["type"] == "session.created"
    return client


async def test_keys_are_checked_before_the_upgrade(base_url: str) -> None:
    for headers in ({}, {"api-key": "wrong"}, {"Authorization": "Bearer wrong"}):
        with pytest.raises(InvalidStatus) as refused:
            await ws_connect(f"{base_url}/v1/realtime?model=m", additional_headers=headers)
        assert refused.value.response.status_code == 401
        assert json.loads(refused.value.response.body)["error"]["code"] == "invalid_api_key"


async def test_every_way_of_presenting_the_key(base_url: str) -> None:
    ways = [
        ("/voice-live/realtime?api-version=2026-07-15&api-key=" + API_KEY, {}, None),
        ("/v1/realtime?model=m", {"Authorization": f"Bearer {API_KEY}"}, None),
        ("/openai/realtime?api-version=2024-10-01-preview&deployment=gpt-4o", {"api-key": API_KEY}, None),
        ("/prefix/voice-live/realtime", {"api-key": API_KEY}, None),
        ("/v1/realtime?model=m", {}, ["realtime", f"openai-insecure-api-key.{API_KEY}", "openai-beta.realtime-v1"]),
    ]
    for path, headers, subprotocols in ways:
        async with ws_connect(f"{base_url}{path}", additional_headers=headers, subprotocols=subprotocols) as ws:
            first = json.loads(await ws.recv())
            assert first["type"] == "session.created", path
            if subprotocols:
                assert ws.subprotocol == "realtime"
                assert "type" not in first["session"]  # the beta subprotocol selects the beta dialect


async def test_bad_events_get_errors_and_the_socket_stays_open(base_url: str) -> None:
    client = await open_client(base_url, Dialect.GA)
    cases = [
        ("{not json", "invalid_json", None),
        (json.dumps({"type": "no.such.event", "event_id": "e1"}), "invalid_value", "type"),
        (json.dumps({"type": "input_audio_buffer.append", "audio": "!!!", "event_id": "e2"}), "invalid_value", "audio"),
        (json.dumps({"type": "conversation.item.truncate", "event_id": "e3"}), "missing_required_parameter", None),
        (json.dumps({"type": "input_audio_buffer.commit", "event_id": "e4"}), "input_audio_buffer_commit_empty", None),
        (json.dumps({"type": "response.cancel", "event_id": "e5"}), "response_cancel_not_active", None),
        (
            json.dumps({"type": "conversation.item.delete", "item_id": "nope", "event_id": "e6"}),
            "invalid_value",
            "item_id",
        ),
    ]
    for text, code, param in cases:
        await client.ws.send(text)
        error = (await client.until("error"))["error"]
        assert error["code"] == code, (text, error)
        assert set(error) >= {"type", "code", "message", "param", "event_id"}
        if param is not None:
            assert error["param"] and param in error["param"]
    assert [e["error"]["event_id"] for e in client.seen if e["type"] == "error"][1:] == [
        "e1",
        "e2",
        "e3",
        "e4",
        "e5",
        "e6",
    ]
    await client.send("session.update", session={"type": "realtime", "instructions": "Be brief."})
    assert (await client.until("session.updated"))["session"]["instructions"] == "Be brief."
    await client.ws.ping()  # pings are answered
    await client.ws.close()


async def test_text_turn_items_and_retrieve(base_url: str) -> None:
    client = await open_client(base_url, Dialect.GA)
    await client.send(
        "conversation.item.create",
        item={
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "What is the capital of France?"}],
        },
    )
    created = await client.until("conversation.item.done")
    item_id = created["item"]["id"]
    await client.send("response.create", response={"output_modalities": ["text"]})
    done = await client.until("response.done")
    response = done["response"]
    # No cap of the client's ("inf"): however long the model talks, koe's own cap ends the reply complete.
    assert (response["status"], response["status_details"]) == ("completed", None), response
    # What the model answers is its own; koe's part is one text item, told the same way by every event that has it.
    [reply] = response["output"]
    assert (reply["type"], reply["role"]) == ("message", "assistant")
    [part] = reply["content"]
    assert part["type"] == "output_text"
    text = part["text"]
    assert text.strip()
    mine = [e for e in client.seen if e.get("response_id") == response["id"]]
    assert "".join(e["delta"] for e in mine if e["type"] == "response.output_text.delta") == text
    assert [e["text"] for e in mine if e["type"] == "response.output_text.done"] == [text]
    assert [e["part"]["text"] for e in mine if e["type"] == "response.content_part.done"] == [text]
    assert [e["item"]["content"][0]["text"] for e in mine if e["type"] == "response.output_item.done"] == [text]
    assert all(e["item_id"] == reply["id"] for e in mine if "item_id" in e)
    kinds = [e["type"] for e in client.seen]
    order = [
        "response.created",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.done",
    ]
    assert [kinds.index(kind) for kind in order] == sorted(kinds.index(kind) for kind in order), kinds
    assert max(i for i, k in enumerate(kinds) if k == "response.output_text.delta") < kinds.index(
        "response.output_text.done"
    )
    assert not [k for k in kinds if "audio" in k]
    await client.send("conversation.item.retrieve", item_id=item_id)
    retrieved = await client.until("conversation.item.retrieved")
    assert retrieved["item"]["content"][0]["text"] == "What is the capital of France?"
    await client.send("conversation.item.retrieve", item_id=reply["id"])
    kept = (await client.until("conversation.item.retrieved"))["item"]
    assert (kept["id"], kept["role"], kept["content"][0]["text"]) == (reply["id"], "assistant", text)
    await client.send("conversation.item.delete", item_id=item_id)
    assert (await client.until("conversation.item.deleted"))["item_id"] == item_id
    await client.send("conversation.item.truncate", item_id=reply["id"], content_index=0, audio_end_ms=10)
    assert (await client.until("error"))["error"]["param"] in ("content_index", "item_id")
    await client.ws.close()


async def test_function_calling_sequence(base_url: str) -> None:
    client = await open_client(base_url, Dialect.GA)
    tool = {
        "type": "function",
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": WEATHER_PARAMETERS,
    }
    await client.send("session.update", session={"type": "realtime", "tools": [tool], "tool_choice": "required"})
    await client.until("session.updated")
    await client.send(
        "conversation.item.create",
        item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather in Tokyo?"}]},
    )
    await client.send("response.create", response={"output_modalities": ["text"], "max_output_tokens": CALL_TOKENS})
    args = await client.until("response.function_call_arguments.done")
    # tool_choice makes the call and names the tool; the city in it is the model's choice, its shape the schema's.
    assert args["name"] == "get_weather"
    assert_city_arguments(args["arguments"])
    done = await client.until("response.done")
    assert done["response"]["status"] == "completed"
    [call] = done["response"]["output"]
    assert call["type"] == "function_call"
    assert (call["call_id"], call["name"], call["arguments"]) == (args["call_id"], "get_weather", args["arguments"])
    await client.send(
        "conversation.item.create",
        item={"type": "function_call_output", "call_id": args["call_id"], "output": '{"sky": "clear", "c": 21}'},
    )
    await client.send("session.update", session={"type": "realtime", "tool_choice": "auto"})
    await client.send("response.create", response={"output_modalities": ["text"]})
    second = await client.until("response.done")
    assert second["response"]["status"] == "completed"  # no cap of the client's: never incomplete
    await client.ws.close()


async def test_overlapping_response_create(base_url: str) -> None:
    ga = await open_client(base_url, Dialect.GA)
    await ga.send(
        "conversation.item.create",
        item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Count to twenty."}]},
    )
    await ga.send("response.create")
    await ga.send("response.create", event_id="second")
    error = (await ga.until("error"))["error"]
    assert (error["code"], error["event_id"]) == ("conversation_already_has_active_response", "second")
    await ga.send("response.cancel")
    assert (await ga.until("response.done"))["response"]["status_details"]["reason"] == "client_cancelled"
    await ga.ws.close()
    # Voice Live cancels the running response instead (cancel_previous defaults to true).
    azure = await open_client(base_url, Dialect.AZURE)
    await azure.send(
        "conversation.item.create",
        item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Count to twenty."}]},
    )
    await azure.send("response.create")
    await azure.until("response.created")
    await azure.send("response.create", response={"modalities": ["text"]})
    first = await azure.until("response.done")
    assert first["response"]["status"] == "cancelled"
    assert (await azure.until("response.done"))["response"]["status"] == "completed"
    await azure.ws.close()


async def test_azure_unsupported_settings_warn_never_error(base_url: str) -> None:
    client = await open_client(base_url, Dialect.AZURE)
    await client.send(
        "session.update",
        session={
            "voice": {"name": "en-US-AvaNeural", "type": "azure-standard", "rate": "1.1"},
            "avatar": {"character": "lisa", "style": "casual-sitting"},
            "input_audio_noise_reduction": {"type": "azure_deep_noise_suppression"},
        },
        event_id="",
    )
    updated = await client.until("session.updated")
    warnings = [e["warning"]["message"] for e in client.seen if e["type"] == "warning"]
    assert any("en-US-AvaNeural" in w for w in warnings) and any("avatar" in w for w in warnings)
    assert not [e for e in client.seen if e["type"] == "error"]
    assert updated["session"]["voice"]["name"] == "en-US-AvaNeural"  # echoed as asked; spoken by koe's default
    await client.ws.close()


async def test_g711_in_and_out(base_url: str, texts: dict[str, str]) -> None:
    client = await open_client(base_url, Dialect.AZURE)
    await client.send(
        "session.update",
        session={
            "input_audio_format": "g711_ulaw",
            "output_audio_format": "g711_ulaw",
            "input_audio_transcription": {"model": "azure-speech"},
            "turn_detection": {"type": "server_vad", "silence_duration_ms": 400},
        },
    )
    await client.until("session.updated")
    pcm, rate = load_wav("short_16k.wav")
    audio = np.concatenate((np.zeros(4000, np.int16), resample(pcm, rate, 8000), np.zeros(12000, np.int16)))
    ulaw = ulaw_encode(audio)
    sender = asyncio.create_task(
        stream_frames(lambda b64: client.send("input_audio_buffer.append", audio=b64), ulaw, pace_s=0.0)
    )
    transcript = (await client.until("conversation.item.input_audio_transcription.completed"))["transcript"]
    assert wer(texts["short"], transcript) <= 0.1
    delta = await client.until("response.audio.delta")
    assert len(base64.b64decode(delta["delta"])) > 0  # G.711: one byte per sample at 8 kHz
    sender.cancel()
    await client.ws.close()


async def test_a_held_reply_reaches_the_client_paced_from_its_first_delta(engines: Engines) -> None:
    # A long silence window: the speculative reply is wholly synthesized while the turn is still ending, and it must
    # still reach the client at the pace it is played, never more than the output lead ahead (issue 13).
    sentences = STORY[: STORY.index(".", STORY.index(".") + 1) + 1]
    async with (
        scripted_engines(engines, pieces(sentences)) as scripted,
        koe_server(realtime_settings(), scripted) as (base, _app),
    ):
        client = await open_client(f"ws{base[4:]}", Dialect.AZURE)
        await client.send("session.update", session={"turn_detection": {"type": "server_vad",
                          "silence_duration_ms": 1500}})  # fmt: skip
        await client.until("session.updated")

        async def append(b64: str) -> None:
            await client.send("input_audio_buffer.append", audio=b64)

        sender = asyncio.create_task(stream_frames(append, speech_24k("short_48k.wav", tail_s=2.5)))
        arrivals: list[tuple[float, int]] = []
        while (event := await client.recv(60))["type"] != "response.done":
            if event["type"] == "response.audio.delta":
                arrivals.append((time.monotonic(), len(base64.b64decode(event["delta"])) // 48))  # ms at 24 kHz
        sender.cancel()
        await client.ws.close()
    assert event["response"]["status"] == "completed"
    first, sent_ms = arrivals[0][0], 0
    for at, ms in arrivals:
        sent_ms += ms
        assert sent_ms - (at - first) * 1000 <= OUTPUT_LEAD_MS + 100, (sent_ms, (at - first) * 1000)
    assert (arrivals[-1][0] - first) * 1000 >= 0.6 * (sent_ms - OUTPUT_LEAD_MS)


async def test_koes_spoken_turn_cap_ends_a_long_reply_complete_at_a_sentence_end(engines: Engines) -> None:
    async with scripted_engines(engines) as scripted, koe_server(realtime_settings(), scripted) as (base, _app):
        client = await open_client(f"ws{base[4:]}", Dialect.AZURE)
        await client.send("session.update", session={"max_response_output_tokens": "inf", "modalities": ["text"]})
        await client.until("session.updated")
        await client.send("conversation.item.create", item={"type": "message", "role": "user",
                          "content": [{"type": "input_text", "text": "Tell me a story."}]})  # fmt: skip
        await client.send("response.create")
        response = (await client.until("response.done"))["response"]
        await client.ws.close()
    assert (response["status"], response["status_details"]) == ("completed", None), response
    text = response["output"][0]["content"][0]["text"]
    assert STORY.startswith(text) and text.endswith(".") and text.count(". ") <= 2, text  # a few sentences


async def test_a_cap_the_client_set_ends_the_reply_incomplete(base_url: str) -> None:
    client = await open_client(base_url, Dialect.GA)
    await client.send("conversation.item.create", item={"type": "message", "role": "user",
                      "content": [{"type": "input_text", "text": "Describe Paris in detail."}]})  # fmt: skip
    await client.send("response.create", response={"output_modalities": ["text"], "max_output_tokens": 2})
    response = (await client.until("response.done"))["response"]
    await client.ws.close()
    assert (response["status"], response["status_details"]) == (
        "incomplete",
        {"type": "incomplete", "reason": "max_output_tokens"},
    ), response


async def test_barge_in_stops_audio_and_truncates_to_what_was_heard(engines: Engines) -> None:
    # The reply must still be playing when the caller speaks again. How long the embedded model talks is its own
    # business, so koe's LLM here is a stand-in that always tells the same half-minute story.
    async with scripted_engines(engines) as scripted, koe_server(realtime_settings(), scripted) as (base, _app):
        await _barge_in(f"ws{base[4:]}")


async def _barge_in(base_url: str) -> None:
    client = await open_client(base_url, Dialect.AZURE)
    await client.send(
        "session.update",
        session={"turn_detection": {"type": "server_vad", "silence_duration_ms": 400, "auto_truncate": True}},
    )
    await client.until("session.updated")

    async def append(b64: str) -> None:
        await client.send("input_audio_buffer.append", audio=b64)

    first = asyncio.create_task(stream_frames(append, speech_24k("short_48k.wav", tail_s=0.6)))
    await client.until("response.audio.delta")
    await first
    await asyncio.sleep(0.3)  # the listener hears a little of the reply
    interrupting = asyncio.create_task(stream_frames(append, speech_24k("reply_48k.wav", lead_s=0.0, tail_s=2.0)))
    started = await client.until("input_audio_buffer.speech_started")
    done = await client.until("response.done")
    assert done["response"]["status"] == "cancelled"
    assert done["response"]["status_details"]["reason"] == "turn_detected"
    cancelled_id = done["response"]["id"]
    truncated = await client.until("conversation.item.truncated")
    after_done = client.seen[client.seen.index(done) :]
    assert not [e for e in after_done if e["type"] == "response.audio.delta" and e["response_id"] == cancelled_id]
    assert client.seen.index(started) < client.seen.index(done)
    heard_ms = truncated["audio_end_ms"]
    assert 0 < heard_ms < 5000
    await client.send("conversation.item.retrieve", item_id=truncated["item_id"])
    item = (await client.until("conversation.item.retrieved"))["item"]
    part = item["content"][0]
    spoken = done["response"]["output"][0]["content"][0]["transcript"]
    assert len(part["transcript"]) <= len(spoken) < len(STORY)
    assert STORY.startswith(spoken) and STORY.startswith(part["transcript"]), (spoken, part["transcript"])
    if "audio" in part:
        assert len(base64.b64decode(part["audio"])) <= heard_ms * 48 + 2  # 24 kHz PCM16: 48 bytes per ms
    interrupting.cancel()
    await client.ws.close()
