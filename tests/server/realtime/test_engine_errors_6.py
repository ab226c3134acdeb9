"""Spec §6: the voice engine's errors as Realtime `error` events, with OpenAI's codes, types and exact messages.

The engine speaks in its own error types (`koe.voice.errors`); these pin what the Realtime door makes of each, on
every dialect, byte for byte: the wire output is what koe sent when the engine still spelled OpenAI's codes.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from koe.protocols.realtime import Dialect, ServerEvents
from koe.server.realtime.render import Renderer
from koe.voice import errors as ve
from koe.voice import events as ev
from koe.voice.conversation import Conversation

CASES: list[tuple[ve.VoiceError, dict[str, Any]]] = [
    (
        ve.CommitTooShort(42.5, 100),
        {
            "type": "invalid_request_error",
            "code": "input_audio_buffer_commit_empty",
            "message": "Error committing input audio buffer: buffer too small. Expected at least 100ms of audio, "
            "but buffer only has 42.50ms of audio.",
            "param": None,
        },
    ),
    (
        ve.ResponseInProgress("resp_1"),
        {
            "type": "invalid_request_error",
            "code": "conversation_already_has_active_response",
            "message": "Conversation already has an active response in progress: resp_1. Wait until the response "
            "is finished before creating a new one.",
            "param": None,
        },
    ),
    (
        ve.ResponseInProgress(None),
        {
            "type": "invalid_request_error",
            "code": "conversation_already_has_active_response",
            "message": "Conversation already has an active response in progress: unknown. Wait until the response "
            "is finished before creating a new one.",
            "param": None,
        },
    ),
    (
        ve.NoResponseToCancel(),
        {
            "type": "invalid_request_error",
            "code": "response_cancel_not_active",
            "message": "Cancellation failed: no active response found",
            "param": None,
        },
    ),
    (
        ve.InvalidItem("no conversation item with id 'nope'", "item_id"),
        {
            "type": "invalid_request_error",
            "code": "invalid_value",
            "message": "no conversation item with id 'nope'",
            "param": "item_id",
        },
    ),
    (
        ve.LimitExceeded("item_chars", 16000, 20000),
        {
            "type": "invalid_request_error",
            "code": "string_above_max_length",
            "message": "the item's text is 20000 characters; an item may hold at most 16000 (limits.item_chars): "
            "split it",
            "param": "item.content",
        },
    ),
    (
        ve.LimitExceeded("items", 1000, 1001),
        {
            "type": "invalid_request_error",
            "code": "array_above_max_length",
            "message": "the conversation would hold 1001 items; a session keeps at most 1000 "
            "(limits.conversation_items): delete old items before adding more",
            "param": None,
        },
    ),
    (
        ve.ResponseFailed("the llm engine did not answer within 30 s", "timeout", "resp_1"),
        {
            "type": "server_error",
            "code": "engine_timeout",
            "message": "the llm engine did not answer within 30 s",
            "param": None,
        },
    ),
    (
        ve.InternalError("internal error: boom"),
        {"type": "server_error", "code": "server_error", "message": "internal error: boom", "param": None},
    ),
]


@pytest.mark.parametrize("dialect", list(Dialect))
@pytest.mark.parametrize(("error", "body"), CASES)
def test_engine_errors_render_as_openai_errors(dialect: Dialect, error: ve.VoiceError, body: dict[str, Any]) -> None:
    renderer = Renderer(ServerEvents(dialect, event_ids=lambda: "event_1"), Conversation())
    rendered = renderer.render(ev.Error(error, cause="evt_client"))
    expected = {"type": "error", "event_id": "event_1", "error": {**body, "event_id": "evt_client"}}
    assert json.dumps(rendered) == json.dumps([expected])


def test_every_engine_error_is_covered() -> None:
    assert {type(error) for error, _ in CASES} == set(ve.VoiceError.__args__)
