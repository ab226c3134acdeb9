"""Spec §4.2, §2.1, §5 and §11.14-26: every server event builder, in every dialect, through the strict validators.

GA events must fit `openai.types.realtime.RealtimeServerEvent`, beta and azure events the beta union, and azure events
must also come back from the Voice Live SDK as typed classes (conftest). The sequences are those of spec §5.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest

from koe.protocols.realtime import (
    ContentPart,
    ContentRef,
    Dialect,
    FunctionCallItem,
    FunctionCallOutputItem,
    MessageItem,
    RealtimeError,
    Response,
    ServerEvents,
    SessionConfig,
    Usage,
    cancelled_details,
    encode_event,
)
from koe.protocols.realtime.formats import G711_ULAW, PCM16_24K
from koe.protocols.realtime.responses import StatusDetails
from koe.protocols.realtime.server_events import MAX_FRAME_BYTES

from .conftest import ALL_DIALECTS, check_event, deserialize_azure, validate_openai

USER_AUDIO = MessageItem("user", (ContentPart("input_audio", audio=b"\x01\x00" * 2400, transcript="Hi"),), id="item_u")
USER_TEXT = MessageItem(
    "user",
    (ContentPart("input_text", text="Weather?"), ContentPart("input_image", image_url="data:image/png;base64,AA")),
    id="item_t",
)
SYSTEM = MessageItem("system", (ContentPart("input_text", text="Be brief"),), id="item_s")
ASSISTANT = MessageItem(
    "assistant",
    (ContentPart("audio", transcript="Hello!", audio=b"\x00\x00" * 24000),),
    id="item_a",
    status="completed",
)
ASSISTANT_TEXT = MessageItem("assistant", (ContentPart("text", text="Bonjour"),), id="item_x")
CALL = FunctionCallItem("get_weather", '{"city":"Paris"}', call_id="call_1", id="item_f")
OUTPUT = FunctionCallOutputItem("call_1", '{"temp":20}', id="item_o")
REF = ContentRef("resp_1", "item_a", 0, 0)
USAGE = Usage(input_text_tokens=5, input_audio_tokens=5, output_text_tokens=8, output_audio_tokens=12)


def every_event(events: ServerEvents) -> list[dict[str, Any]]:
    """One call of every builder, in the order of a full session (§5A, §5C, §5D, §5E)."""
    config = SessionConfig(model="gpt-realtime")
    response = Response.start("resp_1", config, conversation_id="conv_1")
    done = Response(
        "resp_1", "completed", output=(ASSISTANT, CALL), usage=USAGE, conversation_id="conv_1", metadata={"k": "v"}
    )
    calls = [
        events.session_created(config, session_id="sess_1", expires_at=1795426266),
        events.session_updated(config, session_id="sess_1", expires_at=None),
        events.conversation_created("conv_1"),
        events.input_audio_buffer_speech_started(audio_start_ms=1000, item_id="item_u"),
        events.input_audio_buffer_speech_stopped(audio_end_ms=2400, item_id="item_u"),
        events.input_audio_buffer_committed(item_id="item_u", previous_item_id=None),
        events.input_audio_buffer_cleared(),
        events.input_audio_buffer_timeout_triggered(audio_start_ms=0, audio_end_ms=5000, item_id="item_u"),
        events.input_audio_transcription_delta(item_id="item_u", delta="Hi"),
        events.input_audio_transcription_completed(item_id="item_u", transcript="Hi", audio_seconds=1.4),
        events.input_audio_transcription_completed(item_id="item_j", transcript="はい", audio_seconds=1, language="ja"),
        events.input_audio_transcription_failed(item_id="item_u", error=RealtimeError("STT failed", code="stt")),
        events.conversation_item_created(USER_AUDIO, previous_item_id=None),
        # Images exist in GA and Azure, not in the beta types (see test_azure_image_item).
        events.conversation_item_created(
            USER_TEXT if events.dialect is Dialect.GA else SYSTEM, previous_item_id="item_u"
        ),
        events.conversation_item_created(OUTPUT, previous_item_id="item_f"),
        events.response_created(response),
        events.rate_limits_updated(),
        events.response_output_item_added(
            response_id="resp_1", output_index=0, item=MessageItem("assistant", (), id="item_a", status="in_progress")
        ),
        events.conversation_item_added(
            MessageItem("assistant", (), id="item_a", status="in_progress"), previous_item_id="item_u"
        ),
        events.response_content_part_added(REF, ContentPart("audio", transcript="")),
        events.response_audio_transcript_delta(REF, "Hello"),
        events.response_audio_delta(REF, b"\x00\x01" * 4800, PCM16_24K),
        events.response_audio_done(REF),
        events.response_audio_transcript_done(REF, "Hello!"),
        events.response_content_part_done(REF, ContentPart("audio", transcript="Hello!")),
        events.response_text_delta(REF, "Bon"),
        events.response_text_done(REF, "Bonjour"),
        events.response_content_part_added(REF, ContentPart("text", text="")),
        events.response_output_item_done(response_id="resp_1", output_index=0, item=ASSISTANT),
        events.conversation_item_done(ASSISTANT, previous_item_id="item_u"),
        events.response_function_call_arguments_delta(
            response_id="resp_1", item_id="item_f", output_index=1, call_id="call_1", delta='{"city":'
        ),
        events.response_function_call_arguments_done(
            response_id="resp_1",
            item_id="item_f",
            output_index=1,
            call_id="call_1",
            name="get_weather",
            arguments='{"city":"Paris"}',
        ),
        events.response_done(done),
        events.output_audio_buffer_cleared(response_id="resp_1"),
        events.conversation_item_truncated(item_id="item_a", content_index=0, audio_end_ms=1500),
        events.conversation_item_retrieved(ASSISTANT),
        events.conversation_item_retrieved(ASSISTANT_TEXT),
        events.conversation_item_retrieved(SYSTEM),
        events.conversation_item_deleted(item_id="item_a"),
        events.error(RealtimeError("Cancellation failed: no active response found", code="response_cancel_not_active")),
    ]
    return [event for call in calls for event in call]


@ALL_DIALECTS
def test_every_builder_passes_the_validators(dialect: Dialect) -> None:
    events = every_event(ServerEvents(dialect))
    assert events
    for event in events:
        check_event(event, dialect)
    ids = [e["event_id"] for e in events]
    assert len(set(ids)) == len(ids)


@ALL_DIALECTS
def test_event_names_per_dialect(dialect: Dialect) -> None:
    names = {e["type"] for e in every_event(ServerEvents(dialect))}
    ga_only = {
        "conversation.item.added",
        "conversation.item.done",
        "input_audio_buffer.timeout_triggered",
        "response.output_audio.delta",
        "response.output_audio_transcript.delta",
        "response.output_text.done",
    }
    beta_names = {
        "conversation.item.created",
        "response.audio.delta",
        "response.audio_transcript.done",
        "response.text.delta",
    }
    if dialect is Dialect.GA:
        assert ga_only <= names
        assert not names & beta_names
    else:
        assert beta_names <= names
        assert not names & ga_only
    assert ("rate_limits.updated" in names) is (dialect is not Dialect.AZURE)
    assert ("conversation.created" in names) is (dialect is not Dialect.AZURE)


def test_ga_items_and_content() -> None:
    events = ServerEvents(Dialect.GA)
    (added, done) = events.conversation_item_created(USER_AUDIO, previous_item_id=None)
    assert (added["type"], done["type"]) == ("conversation.item.added", "conversation.item.done")
    assert added["item"] == {
        "id": "item_u",
        "object": "realtime.item",
        "type": "message",
        "status": "completed",
        "role": "user",
        "content": [{"type": "input_audio", "transcript": "Hi"}],
    }
    (out,) = events.response_output_item_done(response_id="r", output_index=0, item=ASSISTANT)
    assert out["item"]["content"] == [{"type": "output_audio", "transcript": "Hello!"}]
    (text,) = events.conversation_item_retrieved(ASSISTANT_TEXT)
    assert text["item"]["content"] == [{"type": "output_text", "text": "Bonjour"}]
    assert validate_openai(out, Dialect.GA).item.content[0].type == "output_audio"


@pytest.mark.parametrize("dialect", [Dialect.BETA, Dialect.AZURE])
def test_beta_items_and_content(dialect: Dialect) -> None:
    (created,) = ServerEvents(dialect).conversation_item_created(ASSISTANT, previous_item_id="item_u")
    assert created["type"] == "conversation.item.created"
    assert created["item"]["content"] == [{"type": "audio", "transcript": "Hello!"}]
    assert created["item"]["object"] == "realtime.item"


def test_azure_sdk_reads_audio_and_transcription() -> None:
    events = ServerEvents(Dialect.AZURE)
    pcm = bytes(range(256)) * 10
    (delta,) = events.response_audio_delta(REF, pcm, PCM16_24K)
    parsed = deserialize_azure(delta)
    assert parsed.delta == pcm  # the SDK base64-decodes audio deltas
    assert (parsed.response_id, parsed.item_id, parsed.output_index, parsed.content_index) == ("resp_1", "item_a", 0, 0)
    (completed,) = events.input_audio_transcription_completed(item_id="item_u", transcript="Hi", audio_seconds=1)
    assert deserialize_azure(completed).transcript == "Hi"
    (args,) = events.response_function_call_arguments_done(
        response_id="r", item_id="i", output_index=0, call_id="c", name="get_weather", arguments="{}"
    )
    assert deserialize_azure(args).name == "get_weather"


def test_azure_image_item() -> None:
    (created,) = ServerEvents(Dialect.AZURE).conversation_item_created(USER_TEXT, previous_item_id=None)
    parsed = deserialize_azure(created)
    assert parsed.item.content[1].type == "input_image"
    assert parsed.item.content[1].image_url == "data:image/png;base64,AA"


def test_long_audio_is_split_into_frames_under_the_limit() -> None:
    ten_seconds = b"\x01\x02" * 24000 * 10
    deltas = ServerEvents(Dialect.AZURE).response_audio_delta(REF, ten_seconds, PCM16_24K)
    assert len(deltas) == 20  # 500 ms each
    assert b"".join(base64.b64decode(d["delta"]) for d in deltas) == ten_seconds
    assert all(len(encode_event(d)) < MAX_FRAME_BYTES for d in deltas)
    ulaw = ServerEvents(Dialect.GA).response_audio_delta(REF, b"\xff" * 8001, G711_ULAW, max_ms=100)
    assert [len(base64.b64decode(d["delta"])) for d in ulaw] == [800] * 10 + [1]
    assert ServerEvents(Dialect.GA).response_audio_delta(REF, b"", PCM16_24K) == []


@ALL_DIALECTS
def test_retrieve_includes_audio_unless_the_frame_would_be_too_big(dialect: Dialect) -> None:
    events = ServerEvents(dialect)
    (small,) = events.conversation_item_retrieved(USER_AUDIO)
    assert base64.b64decode(small["item"]["content"][0]["audio"]) == b"\x01\x00" * 2400
    huge = MessageItem("user", (ContentPart("input_audio", audio=b"\x00" * MAX_FRAME_BYTES, transcript="x"),), id="i")
    (big,) = events.conversation_item_retrieved(huge)
    assert "audio" not in big["item"]["content"][0]
    check_event(big, dialect)


@ALL_DIALECTS
def test_cancelled_and_failed_responses(dialect: Dialect) -> None:
    events = ServerEvents(dialect)
    partial = MessageItem("assistant", (ContentPart("audio", transcript="Hel"),), id="item_a", status="incomplete")
    for details, status in (
        (cancelled_details("turn_detected"), "cancelled"),
        (cancelled_details("client_cancelled"), "cancelled"),
        (StatusDetails("incomplete", "max_output_tokens"), "incomplete"),
        (StatusDetails("failed", error={"type": "server_error", "code": "llm", "message": "boom"}), "failed"),
    ):
        (done,) = events.response_done(Response("resp_1", status, details, output=(partial,)))  # type: ignore[arg-type]
        check_event(done, dialect)
        body = done["response"]
        assert body["status"] == status
        assert body["status_details"]["type"] == details.type
        assert body["usage"]["total_tokens"] == 0  # response.done always carries usage (MUST 8)


@ALL_DIALECTS
def test_response_object(dialect: Dialect) -> None:
    config = SessionConfig(model="m", modalities=("text",))
    (created,) = ServerEvents(dialect).response_created(Response.start("resp_9", config, conversation_id="conv_1"))
    body = created["response"]
    assert (body["id"], body["object"], body["status"], body["output"], body["usage"]) == (
        "resp_9",
        "realtime.response",
        "in_progress",
        [],
        None,
    )
    if dialect is Dialect.GA:
        assert body["output_modalities"] == ["text"]
        assert body["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
    else:
        assert body["modalities"] == ["text"]
        assert body["output_audio_format"] == "pcm16"
    usage = Response("r", "completed", usage=USAGE).usage
    assert usage is not None
    assert usage.to_json()["total_tokens"] == 30


def test_error_event_shape() -> None:
    error = RealtimeError(
        "Missing required parameter: 'item_id'.", code="missing_required_parameter", param="item_id", event_id="evt_c7"
    )
    (event,) = ServerEvents(Dialect.GA).error(error)
    assert event["error"] == {
        "type": "invalid_request_error",
        "code": "missing_required_parameter",
        "message": "Missing required parameter: 'item_id'.",
        "param": "item_id",
        "event_id": "evt_c7",
    }
    assert deserialize_azure(ServerEvents(Dialect.AZURE).error(error)[0]).error.code == "missing_required_parameter"


def test_injected_event_ids() -> None:
    counter = iter(range(100))
    events = ServerEvents(Dialect.BETA, event_ids=lambda: f"event_{next(counter)}")
    assert [e["event_id"] for e in events.input_audio_buffer_cleared() + events.input_audio_buffer_cleared()] == [
        "event_0",
        "event_1",
    ]
