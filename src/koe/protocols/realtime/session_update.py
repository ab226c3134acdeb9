"""`session.update` semantics: deep-merging a `SessionPatch` into a `SessionConfig` (spec §1.2, §3, §11.8).

Call `apply_session_update(config, patch)`. Merging works on the *canonical form*: the flat Azure Voice Live session
object, a superset of the beta one, into which the parser has already moved the GA fields. In a patch, an absent key
leaves the setting alone and `null` turns a nullable feature off (`turn_detection`, noise reduction, echo
cancellation, transcription) or restores the default of any other setting. Nested objects merge key by key, except
that a different `type` (or EOU `model`) replaces the object: the fields of `server_vad` mean nothing to
`azure_semantic_vad`.
"""

from __future__ import annotations

from typing import Any

from koe.protocols.realtime._json import Json, JsonObject
from koe.protocols.realtime.errors import INVALID_VALUE, RealtimeError
from koe.protocols.realtime.formats import (
    PCM16_24K,
    Codec,
    input_format,
    output_format_from_name,
    output_format_name,
)
from koe.protocols.realtime.session import (
    AZURE_SEMANTIC_VAD_TYPES,
    DEFAULT_TEMPERATURE,
    DEFAULT_VOICE,
    SEMANTIC_SPEECH_DURATION_MS,
    SERVER_VAD_SPEECH_DURATION_MS,
    EchoCancellation,
    EndOfUtteranceDetection,
    FunctionTool,
    InputAudioTranscription,
    NoiseReduction,
    SessionConfig,
    SessionPatch,
    Tool,
    ToolChoice,
    ToolChoiceFunction,
    TurnDetection,
    UnsupportedTool,
    Voice,
)

_NULL_MEANS_OFF = (
    "turn_detection",
    "input_audio_noise_reduction",
    "input_audio_echo_cancellation",
    "input_audio_transcription",
)
_MERGED_OBJECTS = (*_NULL_MEANS_OFF, "end_of_utterance_detection")


def apply_session_update(config: SessionConfig, patch: SessionPatch) -> SessionConfig:
    """The config after deep-merging `patch` (spec §1.2, §3). Raises `RealtimeError` for an impossible combination."""
    merged = _merge(to_canonical(config), patch.fields)
    if "input_audio_format" in patch.fields and "input_audio_sampling_rate" not in patch.fields:
        merged["input_audio_sampling_rate"] = None  # a new codec starts at its own default rate
    return from_canonical(merged, model=config.model)


def _merge(base: JsonObject, patch: JsonObject) -> dict[str, Json]:
    out = dict(base)
    for key, value in patch.items():
        old = out.get(key)
        if key in _MERGED_OBJECTS and isinstance(value, dict) and isinstance(old, dict):
            discriminator = "model" if key == "end_of_utterance_detection" else "type"
            if discriminator not in value or value[discriminator] == old.get(discriminator):
                out[key] = _merge(old, value)
                continue
        out[key] = value
    return out


def to_canonical(config: SessionConfig) -> dict[str, Json]:
    """The config as a flat Azure-shaped JSON object, the form patches merge into."""
    out: dict[str, Json] = dict(config.extras)
    fmt_in, fmt_out = config.input_audio_format, config.output_audio_format
    out.update(
        type=config.type,
        modalities=list(config.modalities),
        instructions=config.instructions,
        voice=_voice_json(config.voice),
        input_audio_format=fmt_in.codec,
        input_audio_sampling_rate=fmt_in.rate,
        output_audio_format=output_format_name(fmt_out),
        turn_detection=None if config.turn_detection is None else _turn_detection_json(config.turn_detection),
        input_audio_transcription=_transcription_json(config.input_audio_transcription),
        input_audio_noise_reduction=_noise_json(config.input_audio_noise_reduction),
        input_audio_echo_cancellation=_echo_json(config.input_audio_echo_cancellation),
        tools=[_tool_json(t) for t in config.tools],
        tool_choice=tool_choice_json(config.tool_choice),
        parallel_tool_calls=config.parallel_tool_calls,
        temperature=config.temperature,
        max_response_output_tokens=config.max_response_output_tokens,
        speed=config.speed,
    )
    return out


def from_canonical(obj: JsonObject, *, model: str) -> SessionConfig:
    """The typed config for a canonical object whose values the parser has already checked."""
    defaults = SessionConfig()
    known = {f for f in SessionConfig.__dataclass_fields__ if f not in ("model", "extras")}
    known |= {"input_audio_sampling_rate"}
    extras = {k: v for k, v in obj.items() if k not in known and k != "model"}

    def pick(key: str, default: Any) -> Any:
        value = obj.get(key)
        return default if value is None else value

    codec: Codec = pick("input_audio_format", "pcm16")
    rate = obj.get("input_audio_sampling_rate")
    if codec != "pcm16" and rate not in (None, 8000):
        raise RealtimeError(
            f"Invalid value: {rate}. {codec} input is 8000 Hz only.",
            code=INVALID_VALUE,
            param="session.input_audio_sampling_rate",
        )
    output = output_format_from_name(pick("output_audio_format", "pcm16")) or PCM16_24K
    tool_choice = pick("tool_choice", "auto")
    return SessionConfig(
        model=model,
        type=pick("type", "realtime"),
        modalities=tuple(pick("modalities", defaults.modalities)),
        instructions=pick("instructions", ""),
        voice=voice_from_json(pick("voice", DEFAULT_VOICE)),
        input_audio_format=input_format(codec, rate),
        output_audio_format=output,
        turn_detection=_turn_detection(obj.get("turn_detection")),
        input_audio_transcription=_transcription(obj.get("input_audio_transcription")),
        input_audio_noise_reduction=_noise(obj.get("input_audio_noise_reduction")),
        input_audio_echo_cancellation=_echo(obj.get("input_audio_echo_cancellation")),
        tools=tuple(tool_from_json(t) for t in pick("tools", [])),
        tool_choice=tool_choice if isinstance(tool_choice, str) else ToolChoiceFunction(tool_choice["name"]),
        parallel_tool_calls=obj.get("parallel_tool_calls"),
        temperature=float(pick("temperature", DEFAULT_TEMPERATURE)),
        max_response_output_tokens=pick("max_response_output_tokens", "inf"),
        speed=float(pick("speed", 1.0)),
        extras=extras,
    )


def voice_from_json(value: Json) -> Voice:
    if isinstance(value, str):
        return Voice(value)
    if "type" not in value and "id" in value:
        return Voice(value["id"], "id")
    options = {k: v for k, v in value.items() if k not in ("type", "name")}
    return Voice(value.get("name") or value.get("model") or "", value.get("type"), options)


def _voice_json(voice: Voice) -> Json:
    if voice.type is None:
        return voice.name
    if voice.type == "id":
        return {"id": voice.name}
    named = {"name": voice.name} if voice.name and "model" not in voice.options else {}
    return {"type": voice.type, **named, **voice.options}


def tool_from_json(value: JsonObject) -> Tool:
    if value.get("type", "function") == "function":
        return FunctionTool(value.get("name") or "", value.get("description") or "", value.get("parameters") or {})
    return UnsupportedTool(value["type"], value)


def _tool_json(tool: Tool) -> Json:
    if isinstance(tool, UnsupportedTool):
        return dict(tool.raw)
    return {"type": "function", "name": tool.name, "description": tool.description, "parameters": tool.parameters}


def tool_choice_json(choice: ToolChoice) -> Json:
    return choice if isinstance(choice, str) else {"type": "function", "name": choice.name}


_TD_FIELDS = tuple(f for f in TurnDetection.__dataclass_fields__ if f != "end_of_utterance_detection")


def _turn_detection(value: JsonObject | None) -> TurnDetection | None:
    if value is None:
        return None
    kind = value.get("type") or "server_vad"
    semantic = kind in AZURE_SEMANTIC_VAD_TYPES
    speech_default = SEMANTIC_SPEECH_DURATION_MS if semantic else SERVER_VAD_SPEECH_DURATION_MS
    args = {k: value[k] for k in _TD_FIELDS if value.get(k) is not None}
    args["type"] = kind
    speech = args.get("speech_duration_ms", speech_default)
    args["speech_duration_ms"] = max(speech, SEMANTIC_SPEECH_DURATION_MS) if semantic else speech
    if "languages" in args:
        args["languages"] = tuple(args["languages"])
    eou = value.get("end_of_utterance_detection")
    if eou is not None:
        args["end_of_utterance_detection"] = EndOfUtteranceDetection(
            eou["model"], eou.get("threshold_level"), eou.get("timeout_ms"), eou.get("threshold")
        )
    return TurnDetection(**args)


def _turn_detection_json(td: TurnDetection) -> dict[str, Json]:
    out: dict[str, Json] = {k: getattr(td, k) for k in _TD_FIELDS}
    if td.languages is not None:
        out["languages"] = list(td.languages)
    eou = td.end_of_utterance_detection
    if eou is not None:
        fields = {"threshold_level": eou.threshold_level, "timeout_ms": eou.timeout_ms, "threshold": eou.threshold}
        out["end_of_utterance_detection"] = {"model": eou.model, **fields}
    return out


def _transcription(value: JsonObject | None) -> InputAudioTranscription | None:
    if value is None:
        return None
    options = {k: v for k, v in value.items() if k not in ("model", "language", "prompt")}
    return InputAudioTranscription(value.get("model"), value.get("language"), value.get("prompt"), options)


def _transcription_json(value: InputAudioTranscription | None) -> Json:
    if value is None:
        return None
    return {"model": value.model, "language": value.language, "prompt": value.prompt, **value.options}


def _noise(value: JsonObject | None) -> NoiseReduction | None:
    return None if value is None else NoiseReduction(value.get("type") or "near_field")


def _noise_json(value: NoiseReduction | None) -> Json:
    return None if value is None else {"type": value.type}


def _echo(value: JsonObject | None) -> EchoCancellation | None:
    if value is None:
        return None
    kind = value.get("type") or "server_echo_cancellation"
    return EchoCancellation(kind, value.get("reference_source"), value.get("channels"))


def _echo_json(value: EchoCancellation | None) -> Json:
    if value is None:
        return None
    return {"type": value.type, "reference_source": value.reference_source, "channels": value.channels}
