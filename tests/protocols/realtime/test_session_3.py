"""Spec §1.2-1.4, §2.3, §3 and §11.8-13: `session.update` in each dialect, deep merge, and the echoed session.

The inputs are the exact messages real clients send: the Voice Live quickstart (§1.3), the azure-ai-voicelive SDK's
own serialization of its models, the openai SDK payloads of Appendix A.2 and what openai-agents 0.24 builds.
Every echo is checked with the strict openai unions and the Voice Live SDK deserializer (see conftest).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from azure.ai.voicelive.models import (
    AudioInputTranscriptionOptions,
    AzureSemanticVad,
    AzureStandardVoice,
    ClientEventSessionUpdate,
    InputAudioFormat,
    Modality,
    OutputAudioFormat,
    RequestSession,
    ServerVad,
)

from koe.protocols.realtime import (
    Dialect,
    RealtimeError,
    ServerEvents,
    SessionConfig,
    SessionUpdate,
    Voice,
    apply_session_update,
    parse_client_event,
)
from koe.protocols.realtime.formats import G711_ALAW, G711_ULAW, PCM16_8K, PCM16_16K, PCM16_24K
from koe.protocols.realtime.session import EndOfUtteranceDetection, FunctionTool, ToolChoiceFunction

from .conftest import ALL_DIALECTS, check_event, deserialize_azure, validate_openai

QUICKSTART = (
    '{"type":"session.update","session":{'
    '"instructions":"You are a helpful AI assistant responding in natural, engaging language.",'
    '"turn_detection":{"type":"azure_semantic_vad","threshold":0.3,"prefix_padding_ms":200,"silence_duration_ms":200,'
    '"remove_filler_words":false,'
    '"end_of_utterance_detection":{"model":"semantic_detection_v1","threshold":0.01,"timeout":2}},'
    '"input_audio_noise_reduction":{"type":"azure_deep_noise_suppression"},'
    '"input_audio_echo_cancellation":{"type":"server_echo_cancellation"},'
    '"voice":{"name":"en-US-Ava:DragonHDLatestNeural","type":"azure-standard","temperature":0.8}},'
    '"event_id":""}'
)
GA_SESSION = {  # Appendix A.2, what client_openai.py sends in GA
    "type": "realtime",
    "output_modalities": ["audio"],
    "instructions": "You are a helpful assistant.",
    "audio": {
        "input": {
            "format": {"type": "audio/pcm", "rate": 24000},
            "transcription": {"model": "whisper-1", "language": "en"},
            "noise_reduction": {"type": "near_field"},
            "turn_detection": {
                "type": "server_vad",
                "threshold": 0.5,
                "prefix_padding_ms": 300,
                "silence_duration_ms": 500,
                "create_response": True,
                "interrupt_response": True,
            },
        },
        "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "alloy", "speed": 1.0},
    },
}
BETA_SESSION = {  # Appendix A.2 with --beta
    "modalities": ["text", "audio"],
    "instructions": "You are a helpful assistant.",
    "voice": "alloy",
    "input_audio_format": "pcm16",
    "output_audio_format": "pcm16",
    "input_audio_transcription": {"model": "whisper-1"},
    "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 500},
}


def update(config: SessionConfig, text: str | dict[str, Any], dialect: Dialect) -> tuple[SessionConfig, SessionUpdate]:
    raw = text if isinstance(text, str) else json.dumps(text)
    event = parse_client_event(raw, dialect)
    assert isinstance(event, SessionUpdate)
    return apply_session_update(config, event.patch), event


def echoed(config: SessionConfig, dialect: Dialect, *, openai_union: bool = True) -> dict[str, Any]:
    (event,) = ServerEvents(dialect).session_updated(config, session_id="sess_1", expires_at=1795426266)
    check_event(event, dialect, openai_union=openai_union)
    session: dict[str, Any] = event["session"]
    return session


@ALL_DIALECTS
def test_defaults(dialect: Dialect) -> None:
    config = SessionConfig(model="gpt-realtime")
    td = config.turn_detection
    assert td is not None
    assert (td.type, td.create_response, td.interrupt_response) == ("server_vad", True, True)
    assert config.input_audio_format == PCM16_24K == config.output_audio_format
    (created,) = ServerEvents(dialect).session_created(config, session_id="sess_1", expires_at=None)
    check_event(created, dialect)


def test_azure_session_is_beta_shaped_apart_from_the_model() -> None:
    (event,) = ServerEvents(Dialect.AZURE).session_created(SessionConfig(model="gpt-4o"), session_id="s", expires_at=1)
    del event["session"]["model"]
    validate_openai(event, Dialect.AZURE)


def test_quickstart_session_update_is_accepted_without_error() -> None:
    config, event = update(SessionConfig(model="gpt-4o"), QUICKSTART, Dialect.AZURE)
    assert event.event_id is None
    assert event.warnings == ()
    td = config.turn_detection
    assert td is not None
    assert (td.type, td.threshold, td.prefix_padding_ms, td.silence_duration_ms) == (
        "azure_semantic_vad",
        0.3,
        200,
        200,
    )
    assert td.speech_duration_ms == 80
    assert td.end_of_utterance_detection == EndOfUtteranceDetection("semantic_detection_v1", None, 2000, 0.01)
    assert config.input_audio_noise_reduction is not None
    assert config.input_audio_noise_reduction.type == "azure_deep_noise_suppression"
    assert config.input_audio_echo_cancellation is not None
    assert config.voice == Voice("en-US-Ava:DragonHDLatestNeural", "azure-standard", {"temperature": 0.8})

    # Azure voice objects and azure_semantic_vad are Azure-only values: the beta types cannot hold them (spec §7).
    session = echoed(config, Dialect.AZURE, openai_union=False)
    parsed = deserialize_azure({"type": "session.updated", "event_id": "event_x", "session": session})
    assert isinstance(parsed.session.turn_detection, AzureSemanticVad)
    assert parsed.session.turn_detection.end_of_utterance_detection.timeout_ms == 2000
    assert parsed.session.voice["name"] == "en-US-Ava:DragonHDLatestNeural"
    assert parsed.session.input_audio_echo_cancellation.type == "server_echo_cancellation"


def test_voicelive_sdk_request_session_round_trip() -> None:
    request = RequestSession(
        modalities=[Modality.TEXT, Modality.AUDIO],
        instructions="You are a helpful assistant.",
        voice=AzureStandardVoice(name="en-US-AvaNeural"),
        input_audio_format=InputAudioFormat.PCM16,
        output_audio_format=OutputAudioFormat.PCM16_16000_HZ,
        input_audio_transcription=AudioInputTranscriptionOptions(model="azure-speech", language="en-US"),
        turn_detection=ServerVad(threshold=0.6, prefix_padding_ms=300, silence_duration_ms=700),
        input_audio_noise_reduction=None,
    )
    config, _ = update(SessionConfig(), ClientEventSessionUpdate(session=request).as_dict(), Dialect.AZURE)
    assert config.output_audio_format == PCM16_16K
    parsed = deserialize_azure(
        {"type": "session.updated", "event_id": "event_x", "session": echoed(config, Dialect.AZURE, openai_union=False)}
    )
    assert parsed.session.output_audio_format == "pcm16_16000hz"
    assert isinstance(parsed.session.turn_detection, ServerVad)
    assert (parsed.session.turn_detection.threshold, parsed.session.turn_detection.silence_duration_ms) == (0.6, 700)
    assert parsed.session.input_audio_transcription.model == "azure-speech"
    assert parsed.session.instructions == "You are a helpful assistant."


def test_explicit_null_differs_from_absent() -> None:
    base = SessionConfig()
    unchanged, _ = update(base, {"type": "session.update", "session": {"instructions": "x"}}, Dialect.AZURE)
    assert unchanged.turn_detection == base.turn_detection
    off, _ = update(
        base, ClientEventSessionUpdate(session=RequestSession(turn_detection=None)).as_dict(), Dialect.AZURE
    )
    assert off.turn_detection is None
    assert off.instructions == base.instructions
    assert echoed(off, Dialect.AZURE)["turn_detection"] is None


def test_deep_merge_keeps_sibling_fields_and_replaces_on_type_change() -> None:
    config, _ = update(
        SessionConfig(),
        {
            "type": "session.update",
            "session": {"turn_detection": {"type": "server_vad", "threshold": 0.8, "silence_duration_ms": 900}},
        },
        Dialect.BETA,
    )
    config, _ = update(
        config, {"type": "session.update", "session": {"turn_detection": {"threshold": 0.7}}}, Dialect.BETA
    )
    td = config.turn_detection
    assert td is not None
    assert (td.type, td.threshold, td.silence_duration_ms) == ("server_vad", 0.7, 900)
    config, _ = update(
        config,
        {"type": "session.update", "session": {"turn_detection": {"type": "semantic_vad", "eagerness": "high"}}},
        Dialect.BETA,
    )
    td = config.turn_detection
    assert td is not None
    assert (td.type, td.eagerness, td.silence_duration_ms) == ("semantic_vad", "high", 500)


def test_null_restores_defaults_and_empty_instructions_clear() -> None:
    config, _ = update(
        SessionConfig(),
        {"type": "session.update", "session": {"instructions": "Be brief", "temperature": 1.1, "voice": "verse"}},
        Dialect.BETA,
    )
    assert (config.instructions, config.temperature, config.voice.name) == ("Be brief", 1.1, "verse")
    config, _ = update(
        config,
        {"type": "session.update", "session": {"instructions": "", "temperature": None, "voice": None}},
        Dialect.BETA,
    )
    assert (config.instructions, config.temperature, config.voice.name) == ("", 0.8, "alloy")


def test_openai_ga_session_update_round_trip() -> None:
    config, _ = update(
        SessionConfig(model="gpt-realtime"), {"type": "session.update", "session": GA_SESSION}, Dialect.GA
    )
    session = echoed(config, Dialect.GA)
    assert session["type"] == "realtime"
    assert session["output_modalities"] == ["audio"]
    assert session["audio"]["input"]["transcription"] == {"model": "whisper-1", "language": "en"}
    assert session["audio"]["input"]["noise_reduction"] == {"type": "near_field"}
    assert session["audio"]["input"]["turn_detection"]["threshold"] == 0.5
    assert session["audio"]["output"] == {
        "format": {"type": "audio/pcm", "rate": 24000},
        "voice": "alloy",
        "speed": 1.0,
    }
    assert session["max_output_tokens"] == "inf"


def test_openai_beta_session_update_round_trip() -> None:
    config, _ = update(SessionConfig(), {"type": "session.update", "session": BETA_SESSION}, Dialect.BETA)
    session = echoed(config, Dialect.BETA)
    for key in ("modalities", "instructions", "voice", "input_audio_format", "output_audio_format"):
        assert session[key] == BETA_SESSION[key]
    assert session["input_audio_transcription"] == {"model": "whisper-1"}
    assert session["turn_detection"]["type"] == "server_vad"
    assert session["turn_detection"]["create_response"] is True


def test_openai_agents_session_update() -> None:
    agents = pytest.importorskip("agents.realtime.openai_realtime")
    from openai.types.realtime.session_update_event import SessionUpdateEvent

    model = agents.OpenAIRealtimeWebSocketModel()
    settings = {**agents.DEFAULT_MODEL_SETTINGS, "instructions": "Help.", "tool_choice": "auto"}
    payload = model._get_session_config(settings)
    # Sent exactly like _send_raw_message does it.
    text = SessionUpdateEvent(session=payload, type="session.update").model_dump_json(exclude_unset=True)
    config, _ = update(SessionConfig(model="gpt-realtime"), text, Dialect.GA)
    td = config.turn_detection
    assert td is not None
    assert (td.type, td.interrupt_response) == ("semantic_vad", True)
    assert config.voice.name == "ash"
    assert config.input_audio_transcription is not None
    assert config.input_audio_transcription.model == "gpt-4o-mini-transcribe"
    session = echoed(config, Dialect.GA)
    assert session["audio"]["input"]["turn_detection"] == {
        "type": "semantic_vad",
        "eagerness": "auto",
        "create_response": True,
        "interrupt_response": True,
    }


def test_openai_agents_tracing_update_is_accepted() -> None:
    text = '{"session":{"type":"realtime","model":"gpt-realtime","tracing":"auto"},"type":"session.update"}'
    config, _ = update(SessionConfig(model="gpt-realtime"), text, Dialect.GA)
    assert echoed(config, Dialect.GA)["tracing"] == "auto"


@pytest.mark.parametrize(
    ("dialect", "session", "expected_in", "expected_out"),
    [
        (Dialect.AZURE, {"input_audio_format": "pcm16", "input_audio_sampling_rate": 16000}, PCM16_16K, PCM16_24K),
        (Dialect.AZURE, {"input_audio_sampling_rate": 8000, "output_audio_format": "pcm16_8000hz"}, PCM16_8K, PCM16_8K),
        (Dialect.AZURE, {"output_audio_format": "pcm16-16000hz"}, PCM16_24K, PCM16_16K),
        (Dialect.AZURE, {"input_audio_format": "g711_ulaw", "output_audio_format": "g711_alaw"}, G711_ULAW, G711_ALAW),
        (Dialect.BETA, {"input_audio_format": "g711_alaw", "output_audio_format": "g711_ulaw"}, G711_ALAW, G711_ULAW),
        (
            Dialect.GA,
            {"audio": {"input": {"format": {"type": "audio/pcmu"}}, "output": {"format": {"type": "audio/pcma"}}}},
            G711_ULAW,
            G711_ALAW,
        ),
    ],
)
def test_audio_formats(dialect: Dialect, session: dict[str, Any], expected_in: Any, expected_out: Any) -> None:
    config, _ = update(SessionConfig(), {"type": "session.update", "session": session}, dialect)
    assert (config.input_audio_format, config.output_audio_format) == (expected_in, expected_out)
    rendered = echoed(config, dialect)
    if dialect is Dialect.AZURE:
        assert rendered["input_audio_sampling_rate"] == expected_in.rate


@pytest.mark.parametrize(
    ("dialect", "session", "param"),
    [
        (Dialect.AZURE, {"input_audio_format": "opus"}, "session.input_audio_format"),
        (Dialect.BETA, {"output_audio_format": "pcm16_16000hz"}, "session.output_audio_format"),
        (Dialect.AZURE, {"input_audio_sampling_rate": 44100}, "session.input_audio_sampling_rate"),
        (
            Dialect.GA,
            {"audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}},
            "session.audio.input.format.rate",
        ),
        (Dialect.GA, {"audio": {"output": {"format": {"type": "audio/opus"}}}}, "session.audio.output.format.type"),
        (Dialect.BETA, {"temperature": "hot"}, "session.temperature"),
        (
            Dialect.AZURE,
            {"turn_detection": {"type": "server_vad", "threshold": 1.5}},
            "session.turn_detection.threshold",
        ),
        (Dialect.BETA, {"turn_detection": {"type": "azure_semantic_vad"}}, "session.turn_detection.type"),
        (
            Dialect.GA,
            {"audio": {"output": {"voice": {"name": "x", "type": "azure-standard"}}}},
            "session.audio.output.voice.id",
        ),
        (Dialect.BETA, {"voice": {"name": "x", "type": "azure-standard"}}, "session.voice"),
        (Dialect.AZURE, {"voice": {"type": "elevenlabs", "name": "x"}}, "session.voice.type"),
        (Dialect.AZURE, {"max_response_output_tokens": 0}, "session.max_response_output_tokens"),
        (Dialect.GA, {"max_output_tokens": "lots"}, "session.max_output_tokens"),
        (Dialect.AZURE, {"tools": [{"type": "function"}]}, "session.tools[0].name"),
        (Dialect.BETA, {"modalities": ["video"]}, "session.modalities[0]"),
        (
            Dialect.AZURE,
            {
                "turn_detection": {
                    "type": "azure_semantic_vad",
                    "end_of_utterance_detection": {"threshold_level": "low"},
                }
            },
            "session.turn_detection.end_of_utterance_detection.model",
        ),
    ],
)
def test_invalid_values_are_errors_naming_the_param(dialect: Dialect, session: dict[str, Any], param: str) -> None:
    with pytest.raises(RealtimeError) as info:
        parse_client_event(json.dumps({"type": "session.update", "event_id": "evt_9", "session": session}), dialect)
    assert info.value.param == param
    assert info.value.event_id == "evt_9"
    assert info.value.type == "invalid_request_error"
    assert info.value.code in ("invalid_value", "missing_required_parameter")
    (event,) = ServerEvents(dialect).error(info.value)
    check_event(event, dialect)


def test_g711_with_a_pcm_rate_is_an_error() -> None:
    with pytest.raises(RealtimeError) as info:
        update(
            SessionConfig(),
            {
                "type": "session.update",
                "session": {"input_audio_format": "g711_ulaw", "input_audio_sampling_rate": 16000},
            },
            Dialect.AZURE,
        )
    assert info.value.param == "session.input_audio_sampling_rate"


def test_unsupported_azure_settings_are_warnings_not_errors() -> None:
    session = {
        "animation": {"model_name": "default", "outputs": ["blendshapes", "viseme_id"]},
        "avatar": {"character": "lisa", "style": "casual-sitting"},
        "output_audio_timestamp_types": ["word"],
        "interim_response": {"type": "static_interim_response", "triggers": ["latency"], "texts": ["One moment"]},
        "reasoning_effort": "low",
        "metadata": {"user": "42"},
        "tools": [{"type": "mcp", "server_label": "docs", "server_url": "https://example.invalid/mcp"}],
        "turn_detection": {
            "type": "azure_multilingual_semantic_vad",
            "languages": ["en", "ja"],
            "remove_filler_words": True,
            "auto_truncate": True,
            "neg_threshold": 0.2,
            "appended_text_after_truncation": " [interrupted]",
        },
        "modalities": ["text", "audio", "avatar"],
        "brand_new_setting": 1,
    }
    config, event = update(SessionConfig(), {"type": "session.update", "session": session}, Dialect.AZURE)
    params = {w.param for w in event.warnings}
    assert {
        "session.animation",
        "session.avatar",
        "session.output_audio_timestamp_types",
        "session.interim_response",
        "session.reasoning_effort",
        "session.tools[0]",
        "session.brand_new_setting",
    } <= params
    assert "session.metadata" not in params
    td = config.turn_detection
    assert td is not None
    assert (td.type, td.languages, td.remove_filler_words, td.auto_truncate) == (
        "azure_semantic_vad_multilingual",
        ("en", "ja"),
        True,
        True,
    )
    rendered = echoed(config, Dialect.AZURE, openai_union=False)
    assert rendered["metadata"] == {"user": "42"}
    assert rendered["tools"][0]["type"] == "mcp"
    assert rendered["turn_detection"]["appended_text_after_truncation"] == " [interrupted]"
    for warning in event.warnings:
        (sent,) = ServerEvents(Dialect.AZURE).warning(warning)
        assert deserialize_azure(sent).warning.message == warning.message
        assert ServerEvents(Dialect.GA).warning(warning) == []
        assert ServerEvents(Dialect.BETA).warning(warning) == []


def test_tools_and_tool_choice() -> None:
    tool = {
        "type": "function",
        "name": "get_weather",
        "description": "Weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
    session = {
        "tools": [tool],
        "tool_choice": {"type": "function", "name": "get_weather"},
        "parallel_tool_calls": False,
    }
    for dialect in (Dialect.AZURE, Dialect.GA):
        config, _ = update(SessionConfig(), {"type": "session.update", "session": session}, dialect)
        assert config.tools == (FunctionTool("get_weather", "Weather", tool["parameters"]),)
        assert config.tool_choice == ToolChoiceFunction("get_weather")
        rendered = echoed(config, dialect)
        assert rendered["tools"] == [tool]
        assert rendered["tool_choice"] == {"type": "function", "name": "get_weather"}
    # Beta types only allow a string tool choice; a bare function name selects that function.
    config, _ = update(
        SessionConfig(),
        {"type": "session.update", "session": {"tools": [tool], "tool_choice": "get_weather"}},
        Dialect.BETA,
    )
    assert config.tool_choice == ToolChoiceFunction("get_weather")
    assert echoed(config, Dialect.BETA)["tool_choice"] == "get_weather"


def test_ga_transcription_session() -> None:
    session = {
        "type": "transcription",
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "transcription": {"model": "gpt-4o-transcribe"},
                "turn_detection": {"type": "server_vad", "create_response": False},
            }
        },
    }
    config, _ = update(SessionConfig(), {"type": "session.update", "session": session}, Dialect.GA)
    assert config.type == "transcription"
    rendered = echoed(config, Dialect.GA)
    assert rendered["type"] == "transcription"
    assert rendered["audio"]["input"]["transcription"] == {"model": "gpt-4o-transcribe"}


@pytest.mark.parametrize("dialect", [Dialect.BETA, Dialect.AZURE])
def test_transcription_session_update(dialect: Dialect) -> None:
    from koe.protocols.realtime import TranscriptionSessionUpdate

    text = json.dumps(
        {
            "type": "transcription_session.update",
            "session": {
                "input_audio_format": "pcm16",
                "input_audio_transcription": {"model": "whisper-1", "language": "en"},
                "turn_detection": {"type": "server_vad", "silence_duration_ms": 400},
            },
        }
    )
    event = parse_client_event(text, dialect)
    assert isinstance(event, TranscriptionSessionUpdate)
    config = apply_session_update(SessionConfig(), event.patch)
    assert config.type == "transcription"
    (sent,) = ServerEvents(dialect).transcription_session_updated(config, session_id="sess_1", expires_at=1795426266)
    check_event(sent, Dialect.BETA)  # the Voice Live SDK has no class for it, so check the beta union only
    assert sent["session"]["input_audio_transcription"]["model"] == "whisper-1"


def test_client_may_echo_the_created_session_back() -> None:
    config = SessionConfig(model="gpt-realtime")
    created = echoed(config, Dialect.GA)
    again, event = update(config, {"type": "session.update", "session": created}, Dialect.GA)
    assert echoed(again, Dialect.GA) == created
    assert event.warnings == ()


def test_changing_codec_resets_the_input_rate() -> None:
    config, _ = update(
        SessionConfig(), {"type": "session.update", "session": {"input_audio_sampling_rate": 16000}}, Dialect.AZURE
    )
    config, _ = update(
        config, {"type": "session.update", "session": {"input_audio_format": "g711_ulaw"}}, Dialect.AZURE
    )
    assert config.input_audio_format == G711_ULAW
    config, _ = update(config, {"type": "session.update", "session": {"input_audio_format": "pcm16"}}, Dialect.AZURE)
    assert config.input_audio_format == PCM16_24K
