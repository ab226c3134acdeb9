"""The session configuration of a Realtime connection, one typed value whatever the dialect.

Start from `SessionConfig(model=...)`: the defaults of spec §3 and MUST 7 (server VAD that creates and interrupts
responses, PCM16 at 24 kHz both ways). A `session.update` parses (in `client_events`) into a `SessionUpdate` whose
`patch` holds only what the client sent; `session_update.apply_session_update(config, patch)` merges it into a new
config, and `ServerEvents.session_updated()` renders the result in the caller's dialect.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from koe.protocols.realtime._json import Json
from koe.protocols.realtime.formats import PCM16_24K, AudioFormat

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
