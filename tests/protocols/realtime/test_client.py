"""koe.protocols.realtime.client, the client side: what koe sends to a remote Realtime endpoint, checked by koe's own
door parser and the openai SDK's strict client-event unions (spec §2.2, §2.3, §4.1), and every server event koe's
door renders in every dialect, read back as typed events (spec §2.1, §4.2)."""

from __future__ import annotations

import base64
import contextlib
import json
from typing import Annotated, Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from openai.types.beta.realtime import RealtimeClientEvent as BetaClientEvent
from openai.types.realtime import RealtimeClientEvent as GaClientEvent
from pydantic import Field, TypeAdapter

from koe.protocols.realtime import (
    Dialect,
    InputAudioBufferAppend,
    InputAudioBufferCommit,
    ServerEvents,
    SessionUpdate,
    encode_event,
    parse_client_event,
)
from koe.protocols.realtime import client as rt
from koe.protocols.realtime.dialect import dialect_named

from .conftest import ALL_DIALECTS
from .test_server_events_4_2 import every_event

GA_CLIENT: TypeAdapter[Any] = TypeAdapter(Annotated[GaClientEvent, Field(discriminator="type")])
BETA_CLIENT: TypeAdapter[Any] = TypeAdapter(Annotated[BetaClientEvent, Field(discriminator="type")])
CONVERSATION = rt.ClientSession(instructions="Answer in one sentence.", voice="alloy", silence_duration_ms=400)
TRANSCRIPTION = rt.ClientSession(respond=False, transcription_model="gpt-4o-transcribe", language="ja-JP")


@ALL_DIALECTS
@pytest.mark.parametrize("session", [CONVERSATION, TRANSCRIPTION], ids=["conversation", "transcription"])
def test_session_update_is_a_valid_client_event_of_its_dialect(dialect: Dialect, session: rt.ClientSession) -> None:
    text = rt.session_update(dialect, session)
    event = parse_client_event(text, dialect)
    assert isinstance(event, SessionUpdate)
    assert event.warnings == ()
    (GA_CLIENT if dialect is Dialect.GA else BETA_CLIENT).validate_json(text, strict=True)


def test_2_3_session_shapes() -> None:
    ga = json.loads(rt.session_update(Dialect.GA, CONVERSATION))["session"]
    assert ga["type"] == "realtime"
    assert ga["audio"]["input"]["turn_detection"] == {"type": "server_vad", "silence_duration_ms": 400}
    assert ga["audio"]["output"] == {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "alloy"}
    assert ga["instructions"] == "Answer in one sentence."
    flat = json.loads(rt.session_update(Dialect.BETA, CONVERSATION))["session"]
    assert flat["modalities"] == ["text", "audio"]
    assert (flat["input_audio_format"], flat["output_audio_format"], flat["voice"]) == ("pcm16", "pcm16", "alloy")
    assert "input_audio_sampling_rate" not in flat  # an Azure field: OpenAI's beta refuses unknown ones
    azure = json.loads(rt.session_update(Dialect.AZURE, CONVERSATION))["session"]
    assert azure["input_audio_sampling_rate"] == 24000


def test_transcription_session_shapes() -> None:
    openai = json.loads(rt.session_update(Dialect.GA, rt.ClientSession(
        respond=False, transcription_model="gpt-4o-transcribe", language="en-US", silence_duration_ms=400
    )))  # fmt: skip
    assert openai["session"]["type"] == "transcription"
    assert openai["session"]["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert openai["session"]["audio"]["input"]["transcription"] == {"model": "gpt-4o-transcribe", "language": "en"}
    voicelive = json.loads(rt.session_update(Dialect.AZURE, rt.ClientSession(
        respond=False, transcription_model="azure-speech", language="ja-JP"
    )))  # fmt: skip
    assert voicelive["session"]["input_audio_transcription"] == {"model": "azure-speech", "language": "ja-JP"}
    assert voicelive["session"]["turn_detection"]["create_response"] is False
    assert voicelive["session"]["modalities"] == ["text"]
    assert "instructions" not in voicelive["session"]


@ALL_DIALECTS
def test_audio_append_and_commit_are_what_the_door_reads(dialect: Dialect) -> None:
    pcm = bytes(range(256)) * 4
    assert parse_client_event(rt.audio_append(pcm), dialect) == InputAudioBufferAppend(audio=pcm)
    assert parse_client_event(rt.commit(), dialect) == InputAudioBufferCommit()


def test_1_upgrade_headers_per_dialect() -> None:
    assert rt.upgrade_headers(Dialect.GA, "k") == {"Authorization": "Bearer k", "api-key": "k"}
    assert rt.upgrade_headers(Dialect.BETA, "k") == {"OpenAI-Beta": "realtime=v1", "Authorization": "Bearer k",
                                                     "api-key": "k"}  # fmt: skip
    assert rt.upgrade_headers(Dialect.AZURE, "k") == {"api-key": "k"}
    assert rt.upgrade_headers(Dialect.GA, None) == {}
    assert rt.upgrade_headers(Dialect.BETA, None) == {"OpenAI-Beta": "realtime=v1"}


@ALL_DIALECTS
def test_4_2_every_event_the_door_renders_is_read_in_every_dialect(dialect: Dialect) -> None:
    events = [rt.parse_server_event(encode_event(event)) for event in every_event(ServerEvents(dialect))]
    typed = {type(event) for event in events}
    assert typed >= {
        rt.SessionReady, rt.SpeechStarted, rt.SpeechStopped, rt.TranscriptDelta, rt.TranscriptCompleted,
        rt.TranscriptFailed, rt.ResponseCreated, rt.ResponseAudioDelta, rt.ResponseAudioTranscriptDone,
        rt.ResponseDone, rt.UpstreamError, rt.Ignored,
    }  # fmt: skip
    assert rt.SpeechStarted("item_u", 1000) in events
    assert rt.SpeechStopped("item_u", 2400) in events
    assert rt.TranscriptCompleted("item_u", "Hi") in events
    assert rt.TranscriptFailed("item_u", "STT failed") in events
    assert rt.ResponseCreated("resp_1") in events
    assert rt.ResponseAudioDelta("resp_1", "item_a", b"\x00\x01" * 4800) in events
    assert rt.ResponseAudioTranscriptDone("resp_1", "Hello!") in events
    assert rt.ResponseDone("resp_1", "completed", None) in events
    assert rt.UpstreamError("response_cancel_not_active", "Cancellation failed: no active response found") in events


def test_parse_server_events() -> None:
    assert rt.parse_server_event('{"type":"input_audio_buffer.speech_started","item_id":"i","audio_start_ms":5}') == (
        rt.SpeechStarted("i", 5)
    )
    completed = '{"type":"conversation.item.input_audio_transcription.completed","item_id":"i","transcript":"hi"}'
    assert rt.parse_server_event(completed) == rt.TranscriptCompleted("i", "hi")
    assert rt.parse_server_event('{"type":"error","error":{"code":"x","message":"m"}}') == rt.UpstreamError("x", "m")
    assert rt.parse_server_event('{"type":"error","error":{"type":"server_error"}}') == rt.UpstreamError(
        "server_error", ""
    )
    assert rt.parse_server_event('{"type":"rate_limits.updated"}') == rt.Ignored("rate_limits.updated")
    details = {"type": "cancelled", "reason": "turn_detected"}
    cancelled = {"type": "response.done", "response": {"id": "r", "status": "cancelled", "status_details": details}}
    assert rt.parse_server_event(orjson.dumps(cancelled)) == rt.ResponseDone("r", "cancelled", "turn_detected")
    with pytest.raises(rt.RealtimeClientError):
        rt.parse_server_event("[1]")
    with pytest.raises(rt.RealtimeClientError):
        rt.parse_server_event("nope")


def _delta(data: object) -> str:
    return json.dumps({"type": "response.output_audio.delta", "response_id": "r", "item_id": "i", "delta": data})


@pytest.mark.parametrize(
    ("frame", "why"),
    [
        ("{not json", "not JSON"),
        ('{"kind":"x"}', "with a type"),
        ('{"type":7}', "with a type"),
        (_delta("%%%"), "invalid base64"),
        (_delta(base64.b64encode(b"abc").decode()), "even number"),
        (_delta(5), "not a string"),
        ('{"type":"input_audio_buffer.speech_started","item_id":"i","audio_start_ms":"soon"}', "not a number"),
        ('{"type":"input_audio_buffer.speech_started","item_id":["i"]}', "not a string"),
        ('{"type":"response.done","response":"r"}', "not an object"),
        ('{"type":"error","error":{"message":7}}', "not a string"),
    ],
)
def test_an_unreadable_server_event_raises_the_clients_error(frame: str, why: str) -> None:
    with pytest.raises(rt.RealtimeClientError, match=why):
        rt.parse_server_event(frame)


def test_an_oversize_server_event_is_refused_unparsed() -> None:
    with pytest.raises(rt.RealtimeClientError, match="longer than"):
        rt.parse_server_event(b" " * (rt.MAX_EVENT_BYTES + 1))


@given(
    st.dictionaries(
        st.sampled_from(["type", "item_id", "delta", "transcript", "audio_start_ms", "response", "error"]),
        st.one_of(
            st.none(),
            st.integers(),
            st.booleans(),
            st.text(max_size=8),
            st.sampled_from(["AAAA", "response.done"]),
            st.dictionaries(
                st.sampled_from(["id", "status", "status_details", "message", "code"]), st.text(max_size=4)
            ),
        ),
    ).map(lambda obj: {**obj, "type": obj.get("type") or "response.audio.delta"})
)
def test_the_parser_only_ever_raises_its_typed_error(obj: dict[str, object]) -> None:
    with contextlib.suppress(rt.RealtimeClientError):
        rt.parse_server_event(json.dumps(obj))


@pytest.mark.parametrize(
    ("name", "dialect"),
    [("ga", Dialect.GA), ("beta", Dialect.BETA), ("azure", Dialect.AZURE), ("openai", Dialect.GA),
     ("openai-beta", Dialect.BETA), ("voicelive", Dialect.AZURE), (Dialect.AZURE, Dialect.AZURE)],
)  # fmt: skip
def test_one_dialect_vocabulary_with_the_earlier_names(name: str | Dialect, dialect: Dialect) -> None:
    assert dialect_named(name) is dialect


def test_an_unknown_dialect_name_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown Realtime dialect 'realtime'"):
        dialect_named("realtime")
