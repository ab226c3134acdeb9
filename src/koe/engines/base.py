"""The small typed interfaces every model backend implements: `VAD`, `STT`, `TTS` and `LLM`.

The voice engine and the doors only see these. Each backend loads its model once, is shared by every session, and
runs its inference in its own bounded `WorkerPool` (see `koe.engines.pool`), so the async methods here never block
the event loop. What a backend can do beyond its main call is declared here too, never probed for: its `pool` (or
None, for a remote one) through the `Pool` view, `STT.supports_language()`, `TTS.voice_info()` and
`TTS.voice_for()`, `LLM.warm()`, `LLM.aclose()` and `LLM.check()`.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from koe.audio.pcm import Pcm
from koe.languages import Language


class EngineError(Exception):
    """A backend failed on this input or right now; the message says what went wrong and what to do."""


class EngineUnavailable(EngineError):
    """A backend could not be loaded or reached at all."""


class EngineTimeout(EngineError):
    """A backend did not answer within its time limit (a stalled remote server)."""


class ContextTooLong(EngineError):
    """The request does not fit the model's context, even with the oldest turns left out."""


class Pool(Protocol):
    """What a backend's worker pool (`koe.engines.pool.WorkerPool`) shows the rest of koe: its load, for /healthz,
    /metrics and best-effort work that must not queue behind real work, and its shutdown."""

    @property
    def name(self) -> str: ...

    @property
    def workers(self) -> int: ...

    @property
    def depth(self) -> int:
        """Jobs submitted but not yet started."""
        ...

    @property
    def active(self) -> int:
        """Jobs running right now."""
        ...

    @property
    def completed(self) -> int: ...

    def shutdown(self) -> None: ...


# --- voice activity detection -------------------------------------------------------------------------------


class VADStream(Protocol):
    """Speech probability for consecutive windows of one audio stream, with the model state carried along."""

    window_samples: int
    rate: int

    def process(self, window: Pcm) -> float:
        """Probability (0..1) that `window` (exactly `window_samples` samples) contains speech."""
        ...

    def reset(self) -> None: ...


class VAD(Protocol):
    name: str

    def stream(self) -> VADStream:
        """A new, independent stream state. Cheap: the model itself is shared."""
        ...


# --- speech to text ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Word:
    text: str
    start_s: float
    end_s: float
    probability: float


@dataclass(frozen=True, slots=True)
class Segment:
    """One decoding window's text with Whisper's own figures (as OpenAI's `verbose_json` reports them)."""

    start_s: float
    end_s: float
    text: str
    seek: int = 0
    tokens: tuple[int, ...] = ()
    temperature: float = 0.0
    avg_logprob: float = 0.0
    compression_ratio: float = 0.0
    no_speech_prob: float = 0.0


@dataclass(frozen=True, slots=True)
class Transcript:
    text: str
    words: tuple[Word, ...] = ()
    segments: tuple[Segment, ...] = ()
    """Filled when word timings were asked for (the timestamped decoding path)."""
    language: str = "en"
    """Whisper's code of the language transcribed (`ja`): the one asked for, or the one detected for `auto`."""
    duration_s: float = 0.0
    """Length of the audio that was transcribed."""
    elapsed_s: float = 0.0
    """Wall time the model took."""


class STT(Protocol):
    name: str

    @property
    def pool(self) -> Pool | None:
        """The pool transcriptions queue in; None when the backend has none of its own."""
        ...

    def supports_language(self, code: str | Language) -> bool:
        """Whether `code` can be transcribed: a BCP-47 tag (`ja-JP`, `zh-Hant-TW`), a Whisper code, a `Language`, or
        `auto` (detection per utterance). Answers without loading any model."""
        ...

    async def transcribe(
        self, pcm: Pcm, *, language: str | Language | None = None, prompt: str | None = None, words: bool = False
    ) -> Transcript:
        """Transcribe one segment of 16 kHz mono PCM16 in `language` (as for `supports_language`; None: the
        configured `stt.language`). `words` adds per-word timings. An unsupported language is an `EngineError`."""
        ...


# --- text to speech ----------------------------------------------------------------------------------------


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def speech_text(text: str, max_chars: int) -> str:
    """The text a TTS engine speaks: control characters (which Piper cannot take: a NUL raised "embedded null
    character") as spaces, trimmed. `EngineError` when nothing is left or it is longer than `max_chars`."""
    text = _CONTROL.sub(" ", text).strip()
    if not text:
        raise EngineError("nothing to say: the text is empty")
    if len(text) > max_chars:
        raise EngineError(f"text of {len(text)} characters exceeds the {max_chars}-character limit")
    return text


@dataclass(frozen=True, slots=True)
class SpeechChunk:
    """Audio for one sentence or clause, at the voice's native rate."""

    pcm: Pcm
    rate: int
    text: str


Gender = Literal["female", "male"]


@dataclass(frozen=True, slots=True)
class VoiceInfo:
    """What one installed voice speaks and sounds like."""

    name: str
    language: str
    """The ISO 639-1 code of the language it speaks (`en`, `ja`, `zh`)."""
    gender: Gender | None
    """None when the voice does not say."""
    rate: int
    """Its native sample rate (Hz): the rate of its `SpeechChunk`s."""
    backend: str
    """The engine that speaks it (`piper`, `kokoro`)."""


class TTS(Protocol):
    name: str
    default_voice: str
    """The voice for a session that names neither a voice nor a language."""

    @property
    def pool(self) -> Pool | None: ...

    def voices(self) -> list[str]:
        """Names of every installed voice."""
        ...

    def has_voice(self, name: str) -> bool: ...

    def voice_info(self, name: str) -> VoiceInfo:
        """The language, gender and rate of an installed voice. Unknown voice: `EngineError`."""
        ...

    def voice_for(self, language: str) -> str | None:
        """The voice that speaks `language` (a BCP-47 tag or ISO 639-1 code): the one configured for it, else an
        installed one that speaks it; None when no installed voice does."""
        ...

    def synthesize(self, text: str, voice: str | None = None) -> AsyncIterator[SpeechChunk]:
        """Speech for `text`, one chunk per clause as soon as it is ready. Unknown voice: `EngineError`."""
        ...


# --- language model ----------------------------------------------------------------------------------------

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class ToolCall:
    call_id: str
    name: str
    arguments: str
    """JSON text, as the model produced it."""


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Role
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    """For role "tool": the call this message answers."""


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(default_factory=dict)
    """JSON Schema of the arguments."""


@dataclass(frozen=True, slots=True)
class ChatRequest:
    messages: Sequence[ChatMessage]
    tools: Sequence[ToolSpec] = ()
    temperature: float | None = None
    max_tokens: int | None = None
    cache_key: str | None = None
    """Sessions pass a stable key so a backend can keep their prompt prefix warm between turns."""
    tool_choice: str = "auto"
    """`auto`, `none`, `required` (some tool must be called), or the name of the tool that must be called."""


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


FinishReason = Literal["stop", "length", "tool_calls", "cancelled"]


@dataclass(frozen=True, slots=True)
class Finished:
    reason: FinishReason
    prompt_tokens: int = 0
    completion_tokens: int = 0


LLMEvent = TextDelta | ToolCall | Finished


class LLM(Protocol):
    name: str

    @property
    def pool(self) -> Pool | None:
        """The pool generations queue in; None for a remote backend, whose server queues them."""
        ...

    def stream(self, request: ChatRequest) -> AsyncIterator[LLMEvent]:
        """Text deltas and tool calls as they are generated, then exactly one `Finished`.

        Closing the iterator early (or cancelling the task that reads it) stops generation promptly.
        """
        ...

    async def warm(self, request: ChatRequest, *, unfinished: bool = False) -> None:
        """Prepare for requests that start like `request` (an embedded model evaluates its prompt now); a backend
        with nothing to prepare returns at once. `unfinished`: the last message is still being written (the words
        of a caller still speaking), so only the prompt up to the end of its text is evaluated."""
        ...

    async def aclose(self) -> None:
        """Release connections held on the running loop (a remote backend's client); call it before the loop ends."""
        ...

    async def check(self) -> str | None:
        """Why the backend cannot serve right now, or None when it can; for /healthz. Cheap: a remote backend
        answers from its last request's outcome, or from a short probe made at most every few seconds."""
        ...
