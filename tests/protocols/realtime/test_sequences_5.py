"""Spec §5: the canonical event sequences, driven through the public API the way the door will drive it.

Each scenario parses the client's events, keeps the conversation as `ConversationItem`s and renders the server side
with `ServerEvents`; every frame is checked with the strict validators, and the ids must line up (MUST 7, 8, 11).
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import numpy as np

from koe.protocols.realtime import (
    ContentPart,
    ContentRef,
    Dialect,
    FunctionCallItem,
    FunctionCallOutputItem,
    MessageItem,
    Response,
    ResponseCreate,
    ServerEvents,
    SessionConfig,
    SessionUpdate,
    Usage,
    apply_session_update,
    cancelled_details,
    encode_audio,
    new_call_id,
    new_conversation_id,
    new_item_id,
    new_response_id,
    new_session_id,
    parse_client_event,
)
from koe.protocols.realtime.formats import PCM16_24K
from koe.protocols.realtime.items import ROOT

from .conftest import ALL_DIALECTS, check_event
from .test_session_3 import QUICKSTART


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


@ALL_DIALECTS
def test_5a_server_vad_turn(dialect: Dialect) -> None:
    events = ServerEvents(dialect)
    config = SessionConfig(model="gpt-4o")
    session_id, conversation_id = new_session_id(), new_conversation_id()
    sent = events.session_created(config, session_id=session_id, expires_at=1795426266)
    if dialect is Dialect.AZURE:
        update = parse_client_event(QUICKSTART, dialect)
        assert isinstance(update, SessionUpdate)
        config = apply_session_update(config, update.patch)
        sent += events.session_updated(config, session_id=session_id, expires_at=1795426266)

    user_id = new_item_id()
    user = MessageItem("user", (ContentPart("input_audio", transcript="What's the weather?"),), id=user_id)
    sent += events.input_audio_buffer_speech_started(audio_start_ms=1000, item_id=user_id)
    sent += events.input_audio_buffer_speech_stopped(audio_end_ms=2400, item_id=user_id)
    sent += events.input_audio_buffer_committed(item_id=user_id, previous_item_id=None)
    sent += events.input_audio_transcription_completed(
        item_id=user_id, transcript="What's the weather?", audio_seconds=1.4
    )
    sent += events.conversation_item_created(user, previous_item_id=None)

    response = Response.start(new_response_id(), config, conversation_id=conversation_id)
    assistant = MessageItem("assistant", (), id=new_item_id(), status="in_progress")
    ref = ContentRef(response.id, assistant.id or "", 0, 0)
    sent += events.response_created(response)
    sent += events.rate_limits_updated()
    sent += events.response_output_item_added(response_id=response.id, output_index=0, item=assistant)
    sent += events.conversation_item_added(assistant, previous_item_id=user_id)
    sent += events.response_content_part_added(ref, ContentPart("audio", transcript=""))
    tone = (np.sin(np.arange(24000) / 10) * 8000).astype(np.int16)
    for word in ("Sunny ", "and ", "warm."):
        sent += events.response_audio_transcript_delta(ref, word)
        sent += events.response_audio_delta(
            ref, encode_audio(tone, config.output_audio_format), config.output_audio_format
        )
    part = ContentPart("audio", transcript="Sunny and warm.")
    sent += events.response_audio_done(ref)
    sent += events.response_audio_transcript_done(ref, part.transcript or "")
    sent += events.response_content_part_done(ref, part)
    assistant = replace(assistant, content=(part,), status="completed")
    sent += events.response_output_item_done(response_id=response.id, output_index=0, item=assistant)
    sent += events.conversation_item_done(assistant, previous_item_id=user_id)
    usage = Usage(input_audio_tokens=20, output_audio_tokens=40, output_text_tokens=5)
    sent += events.response_done(replace(response, status="completed", output=(assistant,), usage=usage))

    for event in sent:
        check_event(event, dialect)
    names = types(sent)
    assert names[0] == "session.created"
    assert names[-1] == "response.done"
    if dialect is Dialect.GA:
        assert names.count("conversation.item.added") == 2
        assert names.count("conversation.item.done") == 2
        assert "response.output_audio.delta" in names
    else:
        assert names.count("conversation.item.created") == 2
        assert "response.audio.delta" in names
    # One user item id from speech_started to the created item (MUST 7).
    user_ids = {e.get("item_id") for e in sent if e["type"].startswith("input_audio_buffer.")}
    assert user_ids == {user_id}
    done = sent[-1]["response"]
    assert done["status"] == "completed"
    assert done["usage"]["total_tokens"] == 65
    assert done["output"][0]["id"] == assistant.id


@ALL_DIALECTS
def test_5d_function_calling(dialect: Dialect) -> None:
    events = ServerEvents(dialect)
    response = Response.start(new_response_id(), SessionConfig(), conversation_id="conv_1")
    call = FunctionCallItem("get_weather", "", call_id=new_call_id(), id=new_item_id(), status="in_progress")
    sent = events.response_created(response)
    sent += events.response_output_item_added(response_id=response.id, output_index=0, item=call)
    sent += events.conversation_item_added(call, previous_item_id=None)
    for delta in ('{"city":', '"Paris"}'):
        sent += events.response_function_call_arguments_delta(
            response_id=response.id, item_id=call.id or "", output_index=0, call_id=call.call_id or "", delta=delta
        )
    call = replace(call, arguments='{"city":"Paris"}', status="completed")
    sent += events.response_function_call_arguments_done(
        response_id=response.id,
        item_id=call.id or "",
        output_index=0,
        call_id=call.call_id or "",
        name=call.name,
        arguments=call.arguments,
    )
    sent += events.response_output_item_done(response_id=response.id, output_index=0, item=call)
    sent += events.conversation_item_done(call, previous_item_id=None)
    sent += events.response_done(
        replace(response, status="completed", output=(call,), usage=Usage(output_text_tokens=7))
    )

    output = json.dumps(
        {
            "type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": call.call_id, "output": '{"temp_c":21}'},
        }
    )
    created = parse_client_event(output, dialect)
    item = created.item  # type: ignore[union-attr]
    assert isinstance(item, FunctionCallOutputItem)
    sent += events.conversation_item_created(replace(item, id=new_item_id()), previous_item_id=call.id)
    follow_up = parse_client_event('{"type":"response.create"}', dialect)
    assert isinstance(follow_up, ResponseCreate)
    for event in sent:
        check_event(event, dialect)
    args_done = next(e for e in sent if e["type"] == "response.function_call_arguments.done")
    assert (args_done["name"], args_done["call_id"]) == ("get_weather", call.call_id)


@ALL_DIALECTS
def test_5e_barge_in_and_truncate(dialect: Dialect) -> None:
    events = ServerEvents(dialect)
    response = Response.start(new_response_id(), SessionConfig(), conversation_id="conv_1")
    assistant = MessageItem("assistant", (), id=new_item_id(), status="in_progress")
    ref = ContentRef(response.id, assistant.id or "")
    sent = events.response_created(response)
    sent += events.response_output_item_added(response_id=response.id, output_index=0, item=assistant)
    sent += events.response_content_part_added(ref, ContentPart("audio", transcript=""))
    sent += events.response_audio_delta(ref, b"\x00\x00" * 4800, PCM16_24K)
    # The user speaks: stop, close what is open as incomplete, then a cancelled response.done.
    sent += events.input_audio_buffer_speech_started(audio_start_ms=5000, item_id=new_item_id())
    part = ContentPart("audio", transcript="Sunny a")
    sent += events.response_audio_done(ref)
    sent += events.response_audio_transcript_done(ref, "Sunny a")
    sent += events.response_content_part_done(ref, part)
    assistant = replace(assistant, content=(part,), status="incomplete")
    sent += events.response_output_item_done(response_id=response.id, output_index=0, item=assistant)
    sent += events.response_done(
        replace(response, status="cancelled", status_details=cancelled_details("turn_detected"), output=(assistant,))
    )
    sent += events.output_audio_buffer_cleared(response_id=response.id)
    truncate = json.dumps(
        {"type": "conversation.item.truncate", "item_id": assistant.id, "content_index": 0, "audio_end_ms": 120}
    )
    parsed = parse_client_event(truncate, dialect)
    sent += events.conversation_item_truncated(item_id=parsed.item_id, content_index=0, audio_end_ms=120)  # type: ignore[union-attr]
    for event in sent:
        check_event(event, dialect)
    done = next(e for e in sent if e["type"] == "response.done")["response"]
    assert done["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
    assert done["output"][0]["status"] == "incomplete"


def test_5c_text_turn_with_insert_at_root() -> None:
    text = json.dumps(
        {
            "type": "conversation.item.create",
            "previous_item_id": "root",
            "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
        }
    )
    event = parse_client_event(text, Dialect.BETA)
    assert event.previous_item_id == ROOT  # type: ignore[union-attr]
    create = parse_client_event('{"type":"response.create","response":{"modalities":["text"]}}', Dialect.BETA)
    assert isinstance(create, ResponseCreate)
    settings = create.response.settings(SessionConfig())
    assert not settings.audio_output
