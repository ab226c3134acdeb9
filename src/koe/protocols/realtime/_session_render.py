"""A `SessionConfig` as the `session` object of `session.created` / `session.updated`, in each dialect.

`render_session(config, dialect, session_id=..., expires_at=...)` gives the full effective config (spec MUST 4):
* azure: the flat Voice Live session with every Azure field, voice objects as given, `agent: null`;
* beta: the flat OpenAI session, only OpenAI-shaped values (string voice, `server_vad`/`semantic_vad`, function tools),
  so it passes the openai beta types; `model` is left out because those types allow only OpenAI's model names;
* ga: `type`, `object`, nested `audio.input/output`, `output_modalities`, `max_output_tokens`.
A value the dialect cannot express (an Azure voice object, an Azure VAD type) degrades to its nearest OpenAI shape
rather than breaking strict clients; the parser never lets such values in on the OpenAI dialects anyway.
"""

from __future__ import annotations

from typing import Any

from koe.protocols.realtime._json import Json
from koe.protocols.realtime.dialect import Dialect
from koe.protocols.realtime.formats import AudioFormat, ga_format, output_format_name
from koe.protocols.realtime.session import (
    AZURE_SEMANTIC_VAD_TYPES,
    EndOfUtteranceDetection,
    FunctionTool,
    InputAudioTranscription,
    SessionConfig,
    Tool,
    ToolChoice,
    TurnDetection,
    UnsupportedTool,
    Voice,
)
from koe.protocols.realtime.session_update import tool_choice_json

SESSION_OBJECT = "realtime.session"
TRANSCRIPTION_SESSION_OBJECT = "realtime.transcription_session"

_EXTRAS_ECHOED = {
    Dialect.AZURE: (
        "animation",
        "avatar",
        "output_audio_timestamp_types",
        "interim_response",
        "include",
        "metadata",
        "reasoning_effort",
    ),
    Dialect.BETA: ("tracing",),
    Dialect.GA: ("tracing", "truncation", "prompt", "include", "reasoning"),
}
_GA_EXTRA_DEFAULTS: dict[str, Json] = {"tracing": None, "truncation": "auto", "prompt": None, "include": None}


def render_session(
    config: SessionConfig, dialect: Dialect, *, session_id: str, expires_at: int | None
) -> dict[str, Any]:
    if dialect is Dialect.GA:
        return _ga(config, session_id, expires_at)
    azure = dialect is Dialect.AZURE
    session: dict[str, Any] = {"id": session_id, "object": SESSION_OBJECT}
    if azure:
        session["model"] = config.model
    session.update(
        modalities=list(config.modalities) if azure else [m for m in config.modalities if m in ("text", "audio")],
        instructions=config.instructions,
        voice=voice_value(config.voice, dialect),
        input_audio_format=config.input_audio_format.codec,
        output_audio_format=format_value(config.output_audio_format, dialect),
        turn_detection=_turn_detection(config.turn_detection, dialect),
        input_audio_transcription=_transcription(config.input_audio_transcription, dialect),
        input_audio_noise_reduction=_noise(config, dialect),
        tools=tools_value(config.tools, dialect),
        tool_choice=tool_choice_value(config.tool_choice, dialect),
        temperature=config.temperature,
        max_response_output_tokens=config.max_response_output_tokens,
    )
    if azure:
        session["input_audio_sampling_rate"] = config.input_audio_format.rate
        echo = config.input_audio_echo_cancellation
        session["input_audio_echo_cancellation"] = (
            None
            if echo is None
            else _without_none(type=echo.type, reference_source=echo.reference_source, channels=echo.channels)
        )
        session["agent"] = None
    else:
        session["speed"] = config.speed
    if config.parallel_tool_calls is not None:
        session["parallel_tool_calls"] = config.parallel_tool_calls
    session.update({k: config.extras[k] for k in _EXTRAS_ECHOED[dialect] if k in config.extras})
    if expires_at is not None:
        session["expires_at"] = expires_at
    return session


def _ga(config: SessionConfig, session_id: str, expires_at: int | None) -> dict[str, Any]:
    audio_input = {
        "format": ga_format(config.input_audio_format),
        "transcription": _transcription(config.input_audio_transcription, Dialect.GA),
        "noise_reduction": _noise(config, Dialect.GA),
        "turn_detection": _turn_detection(config.turn_detection, Dialect.GA),
    }
    extras = {k: config.extras.get(k, _GA_EXTRA_DEFAULTS.get(k)) for k in _EXTRAS_ECHOED[Dialect.GA]}
    extras = {k: v for k, v in extras.items() if k in _GA_EXTRA_DEFAULTS or v is not None}
    if config.type == "transcription":
        session: dict[str, Any] = {
            "type": "transcription",
            "object": TRANSCRIPTION_SESSION_OBJECT,
            "id": session_id,
            "audio": {"input": audio_input},
            "include": extras.get("include"),
        }
    else:
        session = {
            "type": "realtime",
            "object": SESSION_OBJECT,
            "id": session_id,
            "model": config.model,
            "output_modalities": ["audio"] if config.audio_output else ["text"],
            "instructions": config.instructions,
            "audio": {
                "input": audio_input,
                "output": {
                    "format": ga_format(config.output_audio_format),
                    "voice": voice_value(config.voice, Dialect.GA),
                    "speed": config.speed,
                },
            },
            "tools": tools_value(config.tools, Dialect.GA),
            "tool_choice": tool_choice_value(config.tool_choice, Dialect.GA),
            "max_output_tokens": config.max_response_output_tokens,
            **extras,
        }
        if config.parallel_tool_calls is not None:
            session["parallel_tool_calls"] = config.parallel_tool_calls
    if expires_at is not None:
        session["expires_at"] = expires_at
    return session


def voice_value(voice: Voice, dialect: Dialect) -> Json:
    """The voice as the dialect spells it: Azure keeps objects, GA has `{"id"}`, beta only strings."""
    if voice.type is None:
        return voice.name
    if voice.type == "id":
        return {"id": voice.name} if dialect is Dialect.GA else voice.name
    if dialect is not Dialect.AZURE:
        return voice.name
    named = {"name": voice.name} if voice.name and "model" not in voice.options else {}
    return {"type": voice.type, **named, **voice.options}


def format_value(fmt: AudioFormat, dialect: Dialect) -> Json:
    return ga_format(fmt) if dialect is Dialect.GA else output_format_name(fmt)


def tools_value(tools: tuple[Tool, ...], dialect: Dialect) -> list[Json]:
    out: list[Json] = []
    for tool in tools:
        if isinstance(tool, FunctionTool):
            out.append(
                {
                    "type": "function",
                    "name": tool.name,
                    "description": tool.description,
                    "parameters": dict(tool.parameters),
                }
            )
        elif isinstance(tool, UnsupportedTool) and (
            dialect is Dialect.AZURE or (tool.type == "mcp" and dialect is Dialect.GA)
        ):
            out.append(dict(tool.raw))
    return out


def tool_choice_value(choice: ToolChoice, dialect: Dialect) -> Json:
    if dialect is Dialect.BETA and not isinstance(choice, str):
        return choice.name  # beta types allow only a string here; a bare name selects that function
    return tool_choice_json(choice)


def _turn_detection(td: TurnDetection | None, dialect: Dialect) -> Json:
    if td is None:
        return None
    common = {"create_response": td.create_response, "interrupt_response": td.interrupt_response}
    if td.type == "semantic_vad":
        return {"type": "semantic_vad", "eagerness": td.eagerness, **common}
    vad = {
        "threshold": td.threshold,
        "prefix_padding_ms": td.prefix_padding_ms,
        "silence_duration_ms": td.silence_duration_ms,
    }
    if dialect is not Dialect.AZURE:
        # An Azure VAD type cannot be said in OpenAI terms; its nearest OpenAI shape is server_vad.
        return {"type": "server_vad", **vad, **common, "idle_timeout_ms": td.idle_timeout_ms}
    out: dict[str, Json] = {
        "type": td.type,
        **vad,
        "speech_duration_ms": td.speech_duration_ms,
        "auto_truncate": td.auto_truncate,
        **common,
    }
    if td.idle_timeout_ms is not None:
        out["idle_timeout_ms"] = td.idle_timeout_ms
    if td.end_of_utterance_detection is not None:
        out["end_of_utterance_detection"] = _eou(td.end_of_utterance_detection)
    if td.type in AZURE_SEMANTIC_VAD_TYPES:
        out["remove_filler_words"] = td.remove_filler_words
        if td.languages is not None and td.type != "azure_semantic_vad_en":
            out["languages"] = list(td.languages)
        if td.appended_text_after_truncation is not None:
            out["appended_text_after_truncation"] = td.appended_text_after_truncation
    return out


def _eou(eou: EndOfUtteranceDetection) -> Json:
    return _without_none(
        model=eou.model, threshold_level=eou.threshold_level, timeout_ms=eou.timeout_ms, threshold=eou.threshold
    )


def _transcription(value: InputAudioTranscription | None, dialect: Dialect) -> Json:
    if value is None:
        return None
    return {**_without_none(model=value.model, language=value.language, prompt=value.prompt), **value.options}


def _noise(config: SessionConfig, dialect: Dialect) -> Json:
    noise = config.input_audio_noise_reduction
    if noise is None:
        return None
    if dialect is not Dialect.AZURE and noise.type not in ("near_field", "far_field"):
        return {"type": "near_field"}
    return {"type": noise.type}


def _without_none(**fields: Json) -> dict[str, Json]:
    return {k: v for k, v in fields.items() if v is not None}
