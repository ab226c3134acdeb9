"""What a voice session reports: small frozen dataclasses, in the order things happened.

`Session.events()` yields these. Each door renders them in its own dialect: the Realtime door as Realtime server
events, the ACS door as outbound `AudioData` and `StopAudio`, the Sora door as JSON results. Times are milliseconds
on the input timeline of the participant concerned (from its first appended sample); response audio is PCM16 at
the session's output rate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from koe.audio.pcm import Pcm
from koe.voice.conversation import Item
from koe.voice.errors import ResponseFailed, VoiceError

ResponseStatus = Literal["completed", "cancelled", "incomplete", "failed"]
CancelReason = Literal["turn_detected", "client_cancelled"]


# --- input and turns -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    participant: str | None
    item_id: str
    audio_start_ms: int


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    participant: str | None
    item_id: str
    audio_end_ms: int


@dataclass(frozen=True, slots=True)
class InputCommitted:
    """A turn's audio became a user item (the item follows as `ItemAdded`)."""

    participant: str | None
    item_id: str
    previous_item_id: str | None


@dataclass(frozen=True, slots=True)
class InputCleared:
    participant: str | None


@dataclass(frozen=True, slots=True)
class InputTimeout:
    """Nobody spoke for the turn detection's `idle_timeout_ms`."""

    participant: str | None
    item_id: str
    audio_start_ms: int
    audio_end_ms: int


@dataclass(frozen=True, slots=True)
class TranscriptDelta:
    participant: str | None
    item_id: str
    delta: str
    """Text appended to the previous partial; empty when the recognizer revised earlier words."""
    text: str
    """The whole partial transcript so far."""


@dataclass(frozen=True, slots=True)
class TranscriptCompleted:
    participant: str | None
    item_id: str
    text: str
    audio_start_ms: int
    audio_end_ms: int
    language: str
    duration_s: float = 0.0


@dataclass(frozen=True, slots=True)
class TranscriptFailed:
    participant: str | None
    item_id: str
    message: str


# --- conversation ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ItemAdded:
    item: Item
    previous_item_id: str | None


@dataclass(frozen=True, slots=True)
class ItemUpdated:
    """An item's content changed after it was added (a user transcript arrived, or it was truncated)."""

    item: Item


@dataclass(frozen=True, slots=True)
class ItemDeleted:
    item_id: str


@dataclass(frozen=True, slots=True)
class ItemTruncated:
    item_id: str
    content_index: int
    audio_end_ms: int


# --- responses ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResponseCreated:
    response_id: str
    output_audio: bool
    voice: str
    in_conversation: bool = True
    metadata: dict[str, str] | None = None
    request_id: str | None = None
    """`ResponseOptions.request_id` of the request that created it; None for automatic responses."""


@dataclass(frozen=True, slots=True)
class OutputItemAdded:
    response_id: str
    output_index: int
    item: Item


@dataclass(frozen=True, slots=True)
class ContentPartAdded:
    response_id: str
    item_id: str
    output_index: int
    content_index: int
    kind: Literal["audio", "text"]


@dataclass(frozen=True, slots=True)
class ResponseTextDelta:
    """Text of a text-only response, or (`audio=True`) the transcript of the audio that follows."""

    response_id: str
    item_id: str
    output_index: int
    content_index: int
    delta: str
    audio: bool


@dataclass(frozen=True, slots=True)
class ResponseAudioDelta:
    response_id: str
    item_id: str
    output_index: int
    content_index: int
    pcm: Pcm = field(repr=False)
    rate: int


@dataclass(frozen=True, slots=True)
class ContentPartDone:
    response_id: str
    item_id: str
    output_index: int
    content_index: int
    kind: Literal["audio", "text"]
    text: str
    """The final text, or the final transcript of the audio."""


@dataclass(frozen=True, slots=True)
class FunctionCallArgumentsDelta:
    response_id: str
    item_id: str
    output_index: int
    call_id: str
    delta: str


@dataclass(frozen=True, slots=True)
class FunctionCallArgumentsDone:
    response_id: str
    item_id: str
    output_index: int
    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class OutputItemDone:
    response_id: str
    output_index: int
    item: Item


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    output_audio_ms: int = 0


@dataclass(frozen=True, slots=True)
class ResponseDone:
    response_id: str
    status: ResponseStatus
    reason: str | None = None
    """cancelled: `turn_detected` or `client_cancelled`; incomplete: `max_output_tokens`; failed: the error."""
    output: tuple[Item, ...] = ()
    usage: Usage = field(default_factory=Usage)
    in_conversation: bool = True
    metadata: dict[str, str] | None = None
    failure: ResponseFailed | None = None
    """failed: why (the same error an `Error` event reported just before)."""


@dataclass(frozen=True, slots=True)
class ResponseTiming:
    """Where a reply's latency went, reported once its first audio (or text) leaves.

    `total_ms` runs from the end of the caller's speech (the last voiced window, as the caller's audio arrived:
    the input's resampler, echo canceller and noise suppressor delays count, in `endpoint_ms`) to that first
    output. koe transcribes and starts answering during the pause that ends the turn, so `turn_end_ms` overlaps
    the rest. The
    critical path is the chain `endpoint_ms` + `stt_ms` + `llm_wait_ms` + `llm_first_token_ms` + `first_clause_ms`
    + `tts_first_audio_ms` + `release_wait_ms`, which adds up to `total_ms` (to rounding) for a reply a
    speculation started. None where a part did not apply (a response the client created, or a text-only one).
    """

    response_id: str
    total_ms: int | None
    turn_end_ms: int | None
    """End of speech to the turn's commit (the pause the turn detection waited for)."""
    stt_ms: int | None
    llm_first_token_ms: int | None
    """The LLM request to its first token: queueing, prompt evaluation and one decoding step."""
    tts_first_audio_ms: int | None
    """First clause handed to TTS to its first audio."""
    endpoint_ms: int | None = None
    """End of speech to the VAD calling it (when the speculation, and its transcription, began): the input
    pipeline's delay, the VAD's windows and its pause."""
    llm_wait_ms: int | None = None
    """The transcript ready to the LLM request (planning the reply; for a live reply, the commit too)."""
    first_clause_ms: int | None = None
    """The first token to the first clause complete enough to speak (the LLM writing its first words)."""
    release_wait_ms: int | None = None
    """The first audio made to its leaving: a held reply waits for the turn to end, and every reply for its pace."""


@dataclass(frozen=True, slots=True)
class AudioInterrupted:
    """The caller spoke over the reply: the door flushes audio queued at the far end (`StopAudio`).

    `played_ms` is how much of the item's audio the listener heard, on the playback clock; `dropped_ms` is what
    was sent but will now never be played.
    """

    response_id: str | None
    item_id: str
    played_ms: int
    dropped_ms: int


# --- session --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Warning:  # the protocols' name for it; always used qualified, as `events.Warning`
    message: str
    code: str = "warning"


@dataclass(frozen=True, slots=True)
class Error:
    """Something the caller asked for could not be done; the session goes on. Doors map `error` (see
    `koe.voice.errors`) onto their own protocol's codes."""

    error: VoiceError
    cause: str | None = None
    """The door's id for the command that failed (`Session.cause`), so it can answer in its own protocol."""


Event = (
    SpeechStarted
    | SpeechStopped
    | InputCommitted
    | InputCleared
    | InputTimeout
    | TranscriptDelta
    | TranscriptCompleted
    | TranscriptFailed
    | ItemAdded
    | ItemUpdated
    | ItemDeleted
    | ItemTruncated
    | ResponseCreated
    | OutputItemAdded
    | ContentPartAdded
    | ResponseTextDelta
    | ResponseAudioDelta
    | ContentPartDone
    | FunctionCallArgumentsDelta
    | FunctionCallArgumentsDone
    | OutputItemDone
    | ResponseDone
    | ResponseTiming
    | AudioInterrupted
    | Warning
    | Error
)
