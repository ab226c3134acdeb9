"""Properties of the parser over open-ended input (spec §11.8-9):

* any text, and any JSON, either parses or raises `RealtimeError` (nothing else escapes), and every such error renders
  as an `error` event that passes the strict openai union with type, code, message, param and event_id;
* any `session.update` that parses merges without surprises, and the echoed session still passes the strict openai
  union of its dialect: a client can never make koe send an invalid `session.updated`.
"""

from __future__ import annotations

import json
import os
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from koe.protocols.realtime import (
    Dialect,
    RealtimeError,
    ResponseCreate,
    ServerEvents,
    SessionConfig,
    SessionPatch,
    SessionUpdate,
    apply_session_update,
    parse_client_event,
)
from koe.protocols.realtime.client_events import CLIENT_EVENT_TYPES

from .conftest import check_event, deserialize_azure

EXAMPLES = int(os.environ.get("KOE_FUZZ_EXAMPLES", "100"))
"""Raise for a long local run (e.g. KOE_FUZZ_EXAMPLES=3000); the default keeps the suite fast."""
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=12)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
dialects = st.sampled_from(list(Dialect))

# Keys and values real sessions use, so the fuzzer reaches deep into the parser instead of stopping at the first key.
SESSION_KEYS = [
    "modalities",
    "output_modalities",
    "instructions",
    "voice",
    "input_audio_format",
    "input_audio_sampling_rate",
    "output_audio_format",
    "turn_detection",
    "input_audio_transcription",
    "input_audio_noise_reduction",
    "input_audio_echo_cancellation",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "temperature",
    "max_response_output_tokens",
    "max_output_tokens",
    "speed",
    "type",
    "audio",
    "tracing",
    "include",
    "metadata",
    "avatar",
    "model",
    "id",
]
WORDS = [
    "text",
    "audio",
    "pcm16",
    "g711_ulaw",
    "g711_alaw",
    "pcm16_16000hz",
    "pcm16-8000hz",
    "audio/pcm",
    "audio/pcmu",
    "server_vad",
    "semantic_vad",
    "azure_semantic_vad",
    "azure_multilingual_semantic_vad",
    "near_field",
    "azure_deep_noise_suppression",
    "server_echo_cancellation",
    "client",
    "function",
    "mcp",
    "auto",
    "none",
    "required",
    "inf",
    "alloy",
    "azure-standard",
    "en-US-AvaNeural",
    "realtime",
    "transcription",
    "low",
    "high",
    "semantic_detection_v1",
    "whisper-1",
]
FIELD_NAMES = [
    "type",
    "threshold",
    "prefix_padding_ms",
    "silence_duration_ms",
    "speech_duration_ms",
    "idle_timeout_ms",
    "create_response",
    "interrupt_response",
    "eagerness",
    "languages",
    "end_of_utterance_detection",
    "model",
    "threshold_level",
    "timeout_ms",
    "timeout",
    "name",
    "id",
    "rate",
    "format",
    "input",
    "output",
    "voice",
    "transcription",
    "noise_reduction",
    "parameters",
    "description",
    "language",
    "prompt",
    "reference_source",
    "channels",
    "speed",
    "remove_filler_words",
    "auto_truncate",
]
session_scalars = st.sampled_from(WORDS) | st.integers(-5, 30000) | st.floats(-1, 3, allow_nan=False) | st.booleans()
session_values = st.recursive(
    st.none() | session_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.sampled_from(FIELD_NAMES), children, max_size=5)
    ),
    max_leaves=10,
)
sessions = st.dictionaries(st.sampled_from(SESSION_KEYS), session_values, max_size=6)


def _opt(required: dict[str, Any], optional: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(required, optional=optional)


_ms = st.integers(0, 3000)
_vad_fields = {
    "threshold": st.floats(0, 1),
    "prefix_padding_ms": _ms,
    "silence_duration_ms": _ms,
    "idle_timeout_ms": _ms | st.none(),
    "create_response": st.booleans(),
    "interrupt_response": st.booleans(),
    "eagerness": st.sampled_from(["low", "auto"]),
}
_azure_vad_fields = {
    **_vad_fields,
    "speech_duration_ms": _ms,
    "auto_truncate": st.booleans(),
    "remove_filler_words": st.booleans(),
    "languages": st.lists(st.sampled_from(["en", "ja", "fr"]), max_size=2),
    "appended_text_after_truncation": st.text(max_size=8),
    "end_of_utterance_detection": st.none()
    | _opt(
        {"model": st.sampled_from(["semantic_detection_v1"])},
        {
            "threshold_level": st.sampled_from(["low", "default"]),
            "timeout_ms": _ms,
            "threshold": st.floats(0, 1),
            "timeout": st.floats(0, 5),
        },
    ),
}
_openai_td = st.none() | _opt({"type": st.sampled_from(["server_vad", "semantic_vad"])}, _vad_fields)
_azure_td = st.none() | _opt(
    {
        "type": st.sampled_from(
            [
                "server_vad",
                "semantic_vad",
                "azure_semantic_vad",
                "azure_semantic_vad_en",
                "azure_multilingual_semantic_vad",
            ]
        )
    },
    _azure_vad_fields,
)
_transcription = st.none() | _opt(
    {},
    {
        "model": st.sampled_from(["whisper-1", "azure-speech"]),
        "language": st.sampled_from(["en", "en-US"]),
        "prompt": st.text(max_size=5),
    },
)
_tools = st.lists(
    _opt(
        {"type": st.just("function"), "name": st.sampled_from(["f", "g"])},
        {"description": st.text(max_size=5), "parameters": st.just({"type": "object"})},
    ),
    max_size=2,
)
_tool_choice = st.sampled_from(["auto", "none", "required"]) | st.just({"type": "function", "name": "f"})
_common = {
    "instructions": st.text(max_size=10) | st.none(),
    "tools": _tools,
    "parallel_tool_calls": st.booleans(),
    "tracing": st.none() | st.just("auto"),
}
_flat = {
    **_common,
    "voice": st.sampled_from(["alloy", "verse"]),
    "temperature": st.floats(0, 2),
    "modalities": st.sampled_from([["text"], ["text", "audio"], ["audio", "text"]]),
    "input_audio_format": st.sampled_from(["pcm16", "g711_ulaw", "g711_alaw"]),
    "output_audio_format": st.sampled_from(["pcm16", "g711_ulaw"]),
    "speed": st.floats(0.25, 1.5),
    "input_audio_transcription": _transcription,
    "turn_detection": _openai_td,
    "input_audio_noise_reduction": st.none() | st.just({"type": "far_field"}),
    "max_response_output_tokens": st.integers(1, 4096) | st.just("inf"),
    "tool_choice": st.sampled_from(["auto", "none", "required", "f"]),
}
_ga_format = st.sampled_from([{"type": "audio/pcm", "rate": 24000}, {"type": "audio/pcmu"}, {"type": "audio/pcma"}])
PLAUSIBLE = {
    Dialect.BETA: _opt({}, _flat),
    Dialect.AZURE: _opt(
        {},
        {
            **_flat,
            "turn_detection": _azure_td,
            "tool_choice": _tool_choice,
            "voice": st.sampled_from(
                [
                    "alloy",
                    {"type": "azure-standard", "name": "en-US-AvaNeural", "rate": "1.1"},
                    {"type": "azure-realtime-native", "name": "ava"},
                ]
            ),
            "input_audio_sampling_rate": st.sampled_from([8000, 16000, 24000]),
            "output_audio_format": st.sampled_from(["pcm16", "pcm16_8000hz", "pcm16-16000hz", "g711_alaw"]),
            "input_audio_noise_reduction": st.none() | st.just({"type": "azure_deep_noise_suppression"}),
            "input_audio_echo_cancellation": st.none()
            | _opt(
                {"type": st.just("server_echo_cancellation")},
                {"reference_source": st.sampled_from(["server", "client"]), "channels": st.sampled_from([1, 2])},
            ),
            "metadata": st.just({"a": "b"}),
            "avatar": st.just({"character": "lisa"}),
        },
    ),
    Dialect.GA: _opt(
        {"type": st.just("realtime")},
        {
            **_common,
            "tool_choice": _tool_choice,
            "include": st.none(),
            "output_modalities": st.sampled_from([["audio"], ["text"]]),
            "max_output_tokens": st.integers(1, 4096) | st.just("inf"),
            "audio": _opt(
                {},
                {
                    "input": _opt(
                        {},
                        {
                            "format": _ga_format,
                            "transcription": _transcription,
                            "turn_detection": _openai_td,
                            "noise_reduction": st.none() | st.just({"type": "near_field"}),
                        },
                    ),
                    "output": _opt(
                        {},
                        {
                            "format": _ga_format,
                            "voice": st.sampled_from(["alloy", {"id": "voice_1"}]),
                            "speed": st.floats(0.25, 1.5),
                        },
                    ),
                },
            ),
        },
    ),
}


def check_error_renders(error: RealtimeError, dialect: Dialect, event_id: str | None = None) -> None:
    assert error.event_id == event_id
    assert error.message
    assert error.type == "invalid_request_error"
    for event in ServerEvents(dialect).error(error):
        check_event(event, dialect)
        body = event["error"]
        assert set(body) == {"type", "code", "message", "param", "event_id"}


@FUZZ
@given(text=st.text(max_size=200) | st.binary(max_size=200), dialect=dialects)
def test_any_text_parses_or_raises_realtime_error(text: str | bytes, dialect: Dialect) -> None:
    try:
        parse_client_event(text, dialect)
    except RealtimeError as exc:
        check_error_renders(exc, dialect)


@FUZZ
@given(
    kind=st.sampled_from(CLIENT_EVENT_TYPES[Dialect.AZURE]) | st.text(max_size=20),
    fields=st.dictionaries(
        st.sampled_from(
            [
                "audio",
                "item",
                "item_id",
                "content_index",
                "audio_end_ms",
                "response",
                "response_id",
                "session",
                "previous_item_id",
                "turn_id",
                "id",
                "delta",
                "client_sdp",
                "approve",
                "approval_request_id",
                "event_id",
                "additional_instructions",
            ]
        ),
        json_values,
        max_size=5,
    ),
    dialect=dialects,
)
def test_any_event_object_parses_or_raises_realtime_error(kind: str, fields: dict[str, Any], dialect: Dialect) -> None:
    try:
        parse_client_event(json.dumps({"type": kind, **fields}), dialect)
    except RealtimeError as exc:
        event_id = fields.get("event_id")
        check_error_renders(exc, dialect, event_id if isinstance(event_id, str) and event_id else None)


@FUZZ
@given(session=sessions, dialect=dialects)
def test_accepted_session_updates_echo_valid_sessions(session: dict[str, Any], dialect: Dialect) -> None:
    try:
        event = parse_client_event(json.dumps({"type": "session.update", "session": session}), dialect)
        assert isinstance(event, SessionUpdate)
        config = apply_session_update(SessionConfig(model="gpt-realtime"), event.patch)
    except RealtimeError as exc:
        check_error_renders(exc, dialect)
        return
    if dialect is not Dialect.AZURE:
        assert event.warnings == () or all(
            w.code in ("unknown_parameter", "unsupported_feature") for w in event.warnings
        )
    (updated,) = ServerEvents(dialect).session_updated(config, session_id="sess_1", expires_at=1795426266)
    check_event(updated, dialect)
    if dialect is Dialect.AZURE:
        assert deserialize_azure(updated).session.id == "sess_1"
    # Applying the same update again changes nothing: merging is idempotent.
    assert apply_session_update(config, event.patch) == config


@FUZZ
@given(
    response=st.dictionaries(
        st.sampled_from([*SESSION_KEYS, "conversation", "input", "metadata"]), session_values, max_size=5
    ),
    dialect=dialects,
)
def test_response_create_parses_or_raises_realtime_error(response: dict[str, Any], dialect: Dialect) -> None:
    try:
        event = parse_client_event(json.dumps({"type": "response.create", "response": response}), dialect)
    except RealtimeError as exc:
        check_error_renders(exc, dialect)
        return
    assert isinstance(event, ResponseCreate)
    event.response.settings(SessionConfig())


def _apply(config: SessionConfig, patch: SessionPatch) -> SessionConfig | RealtimeError:
    try:
        return apply_session_update(config, patch)
    except RealtimeError as exc:
        return exc


@settings(FUZZ, max_examples=max(EXAMPLES * 3 // 5, 1))
@given(data=st.data(), dialect=dialects)
def test_plausible_session_updates_are_accepted_and_echo_valid(data: st.DataObject, dialect: Dialect) -> None:
    config = SessionConfig(model="gpt-realtime")
    for _ in range(2):  # two updates in a row, so merges onto non-default state are covered too
        session = data.draw(PLAUSIBLE[dialect])
        event = parse_client_event(json.dumps({"type": "session.update", "session": session}), dialect)
        assert isinstance(event, SessionUpdate)
        merged = _apply(config, event.patch)
        if isinstance(merged, RealtimeError):  # the one invalid combination: a G.711 input at a PCM rate
            assert merged.param == "session.input_audio_sampling_rate"
            assume(False)
            return
        config = merged
        (updated,) = ServerEvents(dialect).session_updated(config, session_id="sess_1", expires_at=1795426266)
        check_event(updated, dialect)
        if "instructions" in session:
            assert config.instructions == (session["instructions"] or "")
