"""What a voice session is configured with, independent of any wire protocol.

Doors translate their own session settings (a Realtime `session.update`, ACS call options, Sora headers) into a
`SessionConfig` and pass it to `Session(...)` or `Session.update(...)`. Every field has the default a user of a
voice server expects: server VAD that creates a response and lets the caller interrupt it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from koe.engines.base import ToolSpec

Mode = Literal["transcribe", "converse"]
TurnType = Literal["server_vad", "semantic_vad"]
Eagerness = Literal["low", "medium", "high", "auto"]
ToolChoice = Literal["auto", "none", "required"] | str
"""`auto`, `none`, `required`, or the name of the one function the model must call."""


@dataclass(frozen=True, slots=True)
class TurnDetection:
    """When a caller's turn starts and ends. `semantic_vad` adds an end-of-utterance decision from the transcript."""

    type: TurnType = "server_vad"
    threshold: float = 0.5
    """Speech probability (0..1) above which a window counts as speech."""
    prefix_padding_ms: int = 300
    """Audio kept before the detected onset, so the first syllable is not clipped."""
    silence_duration_ms: int = 500
    """Silence that ends a turn (for semantic VAD: the wait after a finished sentence)."""
    speech_duration_ms: int = 64
    """Speech needed before an onset counts (shorter blips are ignored)."""
    idle_timeout_ms: int | None = None
    """After this much silence with nothing playing, report a timeout and (with `create_response`) respond."""
    create_response: bool = True
    interrupt_response: bool = True
    auto_truncate: bool = False
    """On barge-in, truncate the assistant item to what the listener heard, without waiting for the client."""
    remove_filler_words: bool = False
    """Fillers such as "um" or "yeah" spoken over a response do not interrupt it."""
    eagerness: Eagerness = "auto"
    eou_timeout_ms: int | None = None
    """Semantic VAD: the longest wait for more speech after an unfinished sentence."""


@dataclass(frozen=True, slots=True)
class SessionConfig:
    mode: Mode = "converse"
    turn_detection: TurnDetection | None = field(default_factory=TurnDetection)
    """None: no automatic turns; the door calls `commit()` and `create_response()` itself."""
    language: str | None = None
    """Transcription language (BCP-47 or ISO 639-1); None: the STT engine's default."""
    transcription: bool = True
    """Report the caller's transcripts. (Conversation always transcribes internally to answer.)"""
    partial_results: bool = False
    """Report partial transcripts while the caller is still speaking."""
    transcription_prompt: str | None = None
    noise_suppression: bool = False
    echo_cancellation: bool = True
    # Responses (converse mode).
    instructions: str | None = None
    """The system prompt; None: the configured default."""
    voice: str | None = None
    """An installed TTS voice; None: the default voice."""
    output_audio: bool = True
    """False: text-only responses."""
    output_rate: int = 24000
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: ToolChoice = "auto"
    temperature: float | None = None
    max_output_tokens: int | None = None
    """The client's cap on a reply's tokens: a reply that reaches it stops `incomplete` (`max_output_tokens`).
    None ("inf"): no cap of the client's; koe's own spoken-turn cap (`Session(turn_tokens=...)`) ends a long reply at
    a sentence end, `completed`."""


@dataclass(frozen=True, slots=True)
class ResponseOptions:
    """Per-response overrides of the session's settings (`response.create` in the Realtime API)."""

    instructions: str | None = None
    additional_instructions: str | None = None
    voice: str | None = None
    output_audio: bool | None = None
    tools: tuple[ToolSpec, ...] | None = None
    tool_choice: ToolChoice | None = None
    temperature: float | None = None
    max_output_tokens: int | None = None
    in_conversation: bool = True
    """False (`conversation: "none"`): an out-of-band response whose output is not added to the conversation."""
    input_item_ids: tuple[str, ...] | None = None
    """Use only these conversation items as the model's input (Realtime `input` with item references)."""
    extra_input: tuple[object, ...] = ()
    """Extra items for this response only (`koe.voice.conversation.Item`), appended after the conversation."""
    metadata: dict[str, str] | None = None
    request_id: str | None = None
    """A door's own id for this request, echoed in `ResponseCreated` so it can find its request again."""


@dataclass(frozen=True, slots=True)
class Limits:
    """What one session may keep and send to its LLM; doors build it from koe's `[limits]` settings.

    A client's item past `item_chars`, or one that would take the conversation past `conversation_items` or
    `conversation_chars`, is refused (`errors.LimitExceeded`). A reply's prompt holds the newest turns that fit
    `prompt_chars` (the model's own context then bounds its tokens). Audio kept in the conversation beyond
    `conversation_audio_ms` is dropped from the oldest items, whose transcripts stay.
    """

    conversation_items: int = 1000
    item_chars: int = 16_000
    conversation_chars: int = 200_000
    prompt_chars: int = 24_000
    conversation_audio_ms: int = 600_000
