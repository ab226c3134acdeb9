"""The session configuration of a Realtime connection, one typed value whatever the dialect.

Start from `SessionConfig(model=...)` (the defaults of spec §3 and MUST 7: server VAD that creates and interrupts
responses, PCM16 at 24 kHz both ways). Each `session.update` parses (in `client_events`) into a `SessionUpdate` whose
`patch` holds only what the client sent; `apply_session_update(config, patch)` deep-merges it into a new config.
Render a config back with `render_session()` (module `_session_render`) through `ServerEvents.session_updated()`.

Merging works on the *canonical form*: the flat Azure Voice Live session object, which is a superset of the beta one,
with GA fields already moved to their flat names by the parser. In a patch, an absent key leaves the setting alone
and `null` turns a nullable feature off (`turn_detection`, noise reduction, echo cancellation, transcription) or
restores the default of any other setting. Nested objects merge key by key, except that a different `type` (or EOU
`model`) replaces the object: the fields of `server_vad` mean nothing to `azure_semantic_vad`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from koe.protocols.realtime._json import Json, JsonObject
from koe.protocols.realtime.errors import INVALID_VALUE, RealtimeError
from koe.protocols.realtime.formats import (
    PCM16_24K,
    AudioFormat,
    Codec,
    input_format,
    output_format_from_name,
    output_format_name,
)

SessionType = Literal["realtime", "transcription"]
MaxTokens = int | Literal["inf"]

DEFAULT_VOICE = "alloy"
DEFAULT_TEMPERATURE = 0.8
DEFAULT_THRESHOLD = 0.5
DEFAULT_PREFIX_PADDING_MS = 300
DEFAULT_SILENCE_DURATION_MS = 500
SERVER_VAD_SPEECH_DURATION_MS = 200
"""Shortest speech `server_vad` counts as a turn (Voice Live how-to)."""
SEMANTIC_SPEECH_DURATION_MS = 80
"""`azure_semantic_vad*` default and floor: shorter values clamp to 80 ms (spec §3.1)."""

AZURE_SEMANTIC_VAD_TYPES = ("azure_semantic_vad", "azure_semantic_vad_en", "azure_semantic_vad_multilingual")
OPENAI_TURN_DETECTION_TYPES = ("server_vad", "semantic_vad")
TURN_DETECTION_TYPES = (*OPENAI_TURN_DETECTION_TYPES, *AZURE_SEMANTIC_VAD_TYPES)

_NULL_MEANS_OFF = (
    "turn_detection",
    "input_audio_noise_reduction",
    "input_audio_echo_cancellation",
    "input_audio_transcription",
)
_MERGED_OBJECTS = (*_NULL_MEANS_OFF, "end_of_utterance_detection")


@dataclass(frozen=True, slots=True)
class Voice:
    """The requested voice, kept as given; the door picks the installed voice it maps to."""

    name: str
    """The OpenAI voice string, the Azure voice `name` (or `model` for avatar voices), or the GA custom voice `id`."""
    type: str | None = None
    """None for a plain string; `"id"` for GA `{"id": ...}`; else the Azure voice object's `type`."""
    options: Mapping[str, Json] = field(default_factory=dict)
    """The other fields of an Azure voice object (`temperature`, `rate`, `style`, `locale`, ...)."""


@dataclass(frozen=True, slots=True)
class EndOfUtteranceDetection:
    model: str
    threshold_level: str | None = None
    """`low`, `medium`, `high` or `default`."""
    timeout_ms: int | None = None
    """Longest wait for more speech; the legacy `timeout` (seconds) arrives here converted."""
    threshold: float | None = None
    """Legacy float threshold the Voice Live quickstart still sends."""


@dataclass(frozen=True, slots=True)
class TurnDetection:
    """Every field of spec §3.1, resolved to its default. Renderers show only the fields the type has on the wire."""

    type: str = "server_vad"
    threshold: float = DEFAULT_THRESHOLD
    prefix_padding_ms: int = DEFAULT_PREFIX_PADDING_MS
    silence_duration_ms: int = DEFAULT_SILENCE_DURATION_MS
    speech_duration_ms: int = SERVER_VAD_SPEECH_DURATION_MS
    idle_timeout_ms: int | None = None
    create_response: bool = True
    interrupt_response: bool = True
    auto_truncate: bool = False
    remove_filler_words: bool = False
    eagerness: str = "auto"
    """`semantic_vad` only: low, medium, high or auto (= medium)."""
    languages: tuple[str, ...] | None = None
    end_of_utterance_detection: EndOfUtteranceDetection | None = None
    appended_text_after_truncation: str | None = None


@dataclass(frozen=True, slots=True)
class InputAudioTranscription:
    model: str | None = None
    language: str | None = None
    prompt: str | None = None
    options: Mapping[str, Json] = field(default_factory=dict)
    """Other fields as given: Azure `phrase_list` / `custom_speech`, GA `delay` / `keywords` / `languages`."""


@dataclass(frozen=True, slots=True)
class NoiseReduction:
    type: str
    """`near_field`, `far_field` or Azure `azure_deep_noise_suppression`."""


@dataclass(frozen=True, slots=True)
class EchoCancellation:
    type: str = "server_echo_cancellation"
    reference_source: str | None = None
    """`server` (the audio koe played) or `client` (channel 1 of stereo input)."""
    channels: int | None = None


@dataclass(frozen=True, slots=True)
class FunctionTool:
    name: str
    description: str = ""
    parameters: Mapping[str, Json] = field(default_factory=dict)
    """The JSON schema of the arguments, as given."""


@dataclass(frozen=True, slots=True)
class UnsupportedTool:
    """A tool koe accepts but cannot run (e.g. `mcp`); kept so it can be echoed, flagged by a warning."""

    type: str
    raw: Mapping[str, Json]


Tool = FunctionTool | UnsupportedTool


@dataclass(frozen=True, slots=True)
class ToolChoiceFunction:
    name: str


ToolChoice = str | ToolChoiceFunction
"""`auto`, `none`, `required`, or one named function."""


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """The effective configuration of one session, as `session.created` / `session.updated` report it."""

    model: str = ""
    type: SessionType = "realtime"
    """GA `session.type`; `transcription` sessions never create responses."""
    modalities: tuple[str, ...] = ("text", "audio")
    """Beta/Azure spelling: audio output always comes with its transcript; Azure may add animation or avatar."""
    instructions: str = ""
    voice: Voice = field(default_factory=lambda: Voice(DEFAULT_VOICE))
    input_audio_format: AudioFormat = PCM16_24K
    output_audio_format: AudioFormat = PCM16_24K
    turn_detection: TurnDetection | None = field(default_factory=TurnDetection)
    input_audio_transcription: InputAudioTranscription | None = None
    input_audio_noise_reduction: NoiseReduction | None = None
    input_audio_echo_cancellation: EchoCancellation | None = None
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice = "auto"
    parallel_tool_calls: bool | None = None
    temperature: float = DEFAULT_TEMPERATURE
    max_response_output_tokens: MaxTokens = "inf"
    speed: float = 1.0
    extras: Mapping[str, Json] = field(default_factory=dict)
    """Accepted settings koe does not act on (`avatar`, `animation`, `tracing`, `metadata`, ...), echoed back."""

    @property
    def audio_output(self) -> bool:
        return "audio" in self.modalities


@dataclass(frozen=True, slots=True)
class SessionPatch:
    """A validated `session.update` in canonical form: only the keys the client sent (values may be null)."""

    fields: Mapping[str, Json]


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
