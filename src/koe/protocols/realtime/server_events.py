"""Server → client events of the Realtime API, built as the JSON each dialect expects.

Make one `ServerEvents(dialect)` per connection. Every builder returns a **list** of JSON-ready dicts, to be sent in
order with `encode_event()`; the list can be empty or hold several events, so dialect differences stay in here:
* `warning()` gives one event on the azure dialect and none elsewhere (it is an Azure-only event);
* `conversation_item_created()` is one `conversation.item.created` (beta/azure) or `conversation.item.added` +
  `conversation.item.done` (GA); `conversation_item_added()` / `conversation_item_done()` split the two for assistant
  items, whose `.done` comes with `response.output_item.done` (spec §5A);
* `response_audio_delta()` cuts long audio into several deltas so each frame stays far below 1 MiB;
* `input_audio_buffer_timeout_triggered()` exists only in GA, `rate_limits_updated()` and `conversation_created()`
  only on the OpenAI dialects.
Every event gets `type` and a fresh `event_id` (spec MUST 5); GA gets GA names (`response.output_audio.delta`, ...).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from koe.protocols.realtime._session_render import render_session
from koe.protocols.realtime.dialect import Dialect
from koe.protocols.realtime.errors import RealtimeError, RealtimeWarning
from koe.protocols.realtime.formats import DELTA_MAX_MS, AudioFormat, split_audio
from koe.protocols.realtime.ids import new_event_id
from koe.protocols.realtime.items import ContentPart, ConversationItem, event_part, render_item
from koe.protocols.realtime.responses import Response, render_response
from koe.protocols.realtime.session import SessionConfig

Event = dict[str, Any]

MAX_FRAME_BYTES = 1024 * 1024
"""Every frame must stay below this: the Voice Live quickstart's websockets client refuses larger ones (spec §11.6)."""
_RETRIEVE_AUDIO_BUDGET = MAX_FRAME_BYTES - 64 * 1024
"""Room for audio in `conversation.item.retrieved`; past it the item is sent without its audio."""

_GA_NAMES = {
    "response.audio.delta": "response.output_audio.delta",
    "response.audio.done": "response.output_audio.done",
    "response.audio_transcript.delta": "response.output_audio_transcript.delta",
    "response.audio_transcript.done": "response.output_audio_transcript.done",
    "response.text.delta": "response.output_text.delta",
    "response.text.done": "response.output_text.done",
}


@dataclass(frozen=True, slots=True)
class ContentRef:
    """Where a content part sits: the four ids every `response.*` part event repeats."""

    response_id: str
    item_id: str
    output_index: int = 0
    content_index: int = 0

    def fields(self) -> dict[str, Any]:
        return {
            "response_id": self.response_id,
            "item_id": self.item_id,
            "output_index": self.output_index,
            "content_index": self.content_index,
        }


@dataclass(frozen=True, slots=True)
class RateLimit:
    name: str
    limit: int
    remaining: int
    reset_seconds: float


DEFAULT_RATE_LIMITS = (RateLimit("requests", 1000, 999, 60.0), RateLimit("tokens", 50000, 50000, 60.0))
"""koe has no quota; these say so in the shape clients expect."""


def encode_event(event: Event) -> str:
    """The text frame for one event."""
    return orjson.dumps(event).decode("utf-8")


class ServerEvents:
    def __init__(self, dialect: Dialect, *, event_ids: Callable[[], str] = new_event_id) -> None:
        self.dialect = dialect
        self._event_ids = event_ids

    def _event(self, kind: str, **fields: Any) -> Event:
        if self.dialect is Dialect.GA:
            kind = _GA_NAMES.get(kind, kind)
        return {"type": kind, "event_id": self._event_ids(), **fields}

    # -- errors and warnings --------------------------------------------------------------------------------------

    def error(self, error: RealtimeError) -> list[Event]:
        body = {
            "type": error.type,
            "code": error.code,
            "message": error.message,
            "param": error.param,
            "event_id": error.event_id,
        }
        return [self._event("error", error=body)]

    def warning(self, warning: RealtimeWarning) -> list[Event]:
        """An Azure `warning`; nothing on the OpenAI dialects, which have no such event."""
        if self.dialect is not Dialect.AZURE:
            return []
        body = {"message": warning.message, "code": warning.code, "param": warning.param}
        return [self._event("warning", warning=body)]

    # -- session --------------------------------------------------------------------------------------------------

    def session_created(self, config: SessionConfig, *, session_id: str, expires_at: int | None) -> list[Event]:
        session = render_session(config, self.dialect, session_id=session_id, expires_at=expires_at)
        return [self._event("session.created", session=session)]

    def session_updated(self, config: SessionConfig, *, session_id: str, expires_at: int | None) -> list[Event]:
        session = render_session(config, self.dialect, session_id=session_id, expires_at=expires_at)
        return [self._event("session.updated", session=session)]

    def transcription_session_updated(
        self, config: SessionConfig, *, session_id: str, expires_at: int | None
    ) -> list[Event]:
        """The answer to `transcription_session.update` (beta/azure); GA transcription sessions use session.updated."""
        if self.dialect is Dialect.GA:
            return self.session_updated(config, session_id=session_id, expires_at=expires_at)
        full = render_session(config, self.dialect, session_id=session_id, expires_at=expires_at)
        keep = (
            "id",
            "object",
            "input_audio_format",
            "input_audio_transcription",
            "turn_detection",
            "input_audio_noise_reduction",
            "modalities",
            "expires_at",
        )
        session = {k: full[k] for k in keep if k in full}
        session["object"] = "realtime.transcription_session"
        # The beta types require a client secret here; koe issues none, so it is empty.
        session["client_secret"] = {"value": "", "expires_at": expires_at or 0}
        return [self._event("transcription_session.updated", session=session)]

    def conversation_created(self, conversation_id: str) -> list[Event]:
        if self.dialect is Dialect.AZURE:
            return []
        return [
            self._event("conversation.created", conversation={"id": conversation_id, "object": "realtime.conversation"})
        ]

    # -- input audio buffer ---------------------------------------------------------------------------------------

    def input_audio_buffer_speech_started(self, *, audio_start_ms: int, item_id: str) -> list[Event]:
        return [self._event("input_audio_buffer.speech_started", audio_start_ms=audio_start_ms, item_id=item_id)]

    def input_audio_buffer_speech_stopped(self, *, audio_end_ms: int, item_id: str) -> list[Event]:
        return [self._event("input_audio_buffer.speech_stopped", audio_end_ms=audio_end_ms, item_id=item_id)]

    def input_audio_buffer_committed(self, *, item_id: str, previous_item_id: str | None) -> list[Event]:
        return [self._event("input_audio_buffer.committed", previous_item_id=previous_item_id, item_id=item_id)]

    def input_audio_buffer_cleared(self) -> list[Event]:
        return [self._event("input_audio_buffer.cleared")]

    def input_audio_buffer_timeout_triggered(
        self, *, audio_start_ms: int, audio_end_ms: int, item_id: str
    ) -> list[Event]:
        """GA only: server VAD's `idle_timeout_ms` passed without speech."""
        if self.dialect is not Dialect.GA:
            return []
        return [
            self._event(
                "input_audio_buffer.timeout_triggered",
                audio_start_ms=audio_start_ms,
                audio_end_ms=audio_end_ms,
                item_id=item_id,
            )
        ]

    def output_audio_buffer_cleared(self, *, response_id: str) -> list[Event]:
        return [self._event("output_audio_buffer.cleared", response_id=response_id)]

    # -- conversation items ---------------------------------------------------------------------------------------

    def conversation_item_created(self, item: ConversationItem, *, previous_item_id: str | None) -> list[Event]:
        """A finished item joined the conversation (user audio after commit, `conversation.item.create`)."""
        return self.conversation_item_added(item, previous_item_id=previous_item_id) + self.conversation_item_done(
            item, previous_item_id=previous_item_id
        )

    def conversation_item_added(self, item: ConversationItem, *, previous_item_id: str | None) -> list[Event]:
        """An item joined the conversation, possibly still in progress (assistant items at `output_item.added`)."""
        kind = "conversation.item.added" if self.dialect is Dialect.GA else "conversation.item.created"
        return [self._event(kind, previous_item_id=previous_item_id, item=render_item(item, self.dialect))]

    def conversation_item_done(self, item: ConversationItem, *, previous_item_id: str | None) -> list[Event]:
        """GA's `conversation.item.done` for a finished item; beta and Azure have no such event."""
        if self.dialect is not Dialect.GA:
            return []
        return [
            self._event(
                "conversation.item.done", previous_item_id=previous_item_id, item=render_item(item, self.dialect)
            )
        ]

    def conversation_item_retrieved(self, item: ConversationItem) -> list[Event]:
        """The full item, audio included as base64 unless that would push the frame past 1 MiB."""
        event = self._event("conversation.item.retrieved", item=render_item(item, self.dialect, include_audio=True))
        if len(encode_event(event)) > _RETRIEVE_AUDIO_BUDGET:
            event["item"] = render_item(item, self.dialect)
        return [event]

    def conversation_item_truncated(self, *, item_id: str, content_index: int, audio_end_ms: int) -> list[Event]:
        return [
            self._event(
                "conversation.item.truncated", item_id=item_id, content_index=content_index, audio_end_ms=audio_end_ms
            )
        ]

    def conversation_item_deleted(self, *, item_id: str) -> list[Event]:
        return [self._event("conversation.item.deleted", item_id=item_id)]

    # -- input transcription --------------------------------------------------------------------------------------

    def input_audio_transcription_delta(self, *, item_id: str, delta: str, content_index: int = 0) -> list[Event]:
        return [
            self._event(
                "conversation.item.input_audio_transcription.delta",
                item_id=item_id,
                content_index=content_index,
                delta=delta,
            )
        ]

    def input_audio_transcription_completed(
        self,
        *,
        item_id: str,
        transcript: str,
        audio_seconds: float,
        content_index: int = 0,
        language: str | None = None,
    ) -> list[Event]:
        """`usage` is required by the openai types; koe reports the transcribed audio's duration. `language` (the
        code transcribed in, or detected) goes in OpenAI's `languages: [{"code"}]`, the list of languages detected."""
        extra: dict[str, Any] = {"languages": [{"code": language}]} if language else {}
        return [
            self._event(
                "conversation.item.input_audio_transcription.completed",
                item_id=item_id,
                content_index=content_index,
                transcript=transcript,
                usage={"type": "duration", "seconds": float(audio_seconds)},
                **extra,
            )
        ]

    def input_audio_transcription_failed(
        self, *, item_id: str, error: RealtimeError, content_index: int = 0
    ) -> list[Event]:
        body = {"type": error.type, "code": error.code, "message": error.message, "param": error.param}
        return [
            self._event(
                "conversation.item.input_audio_transcription.failed",
                item_id=item_id,
                content_index=content_index,
                error=body,
            )
        ]

    # -- responses ------------------------------------------------------------------------------------------------

    def response_created(self, response: Response) -> list[Event]:
        return [self._event("response.created", response=render_response(response, self.dialect))]

    def response_done(self, response: Response) -> list[Event]:
        return [self._event("response.done", response=render_response(response, self.dialect))]

    def rate_limits_updated(self, limits: Sequence[RateLimit] = DEFAULT_RATE_LIMITS) -> list[Event]:
        """OpenAI dialects only (the Voice Live SDK has no such event)."""
        if self.dialect is Dialect.AZURE:
            return []
        rows = [
            {"name": r.name, "limit": r.limit, "remaining": r.remaining, "reset_seconds": r.reset_seconds}
            for r in limits
        ]
        return [self._event("rate_limits.updated", rate_limits=rows)]

    def response_output_item_added(self, *, response_id: str, output_index: int, item: ConversationItem) -> list[Event]:
        return [
            self._event(
                "response.output_item.added",
                response_id=response_id,
                output_index=output_index,
                item=render_item(item, self.dialect),
            )
        ]

    def response_output_item_done(self, *, response_id: str, output_index: int, item: ConversationItem) -> list[Event]:
        return [
            self._event(
                "response.output_item.done",
                response_id=response_id,
                output_index=output_index,
                item=render_item(item, self.dialect),
            )
        ]

    def response_content_part_added(self, ref: ContentRef, part: ContentPart) -> list[Event]:
        return [self._event("response.content_part.added", **ref.fields(), part=event_part(part))]

    def response_content_part_done(self, ref: ContentRef, part: ContentPart) -> list[Event]:
        return [self._event("response.content_part.done", **ref.fields(), part=event_part(part))]

    def response_audio_delta(
        self, ref: ContentRef, audio: bytes, fmt: AudioFormat, *, max_ms: float = DELTA_MAX_MS
    ) -> list[Event]:
        """One delta per `max_ms` of `audio` (wire bytes in the session's output format)."""
        return [
            self._event("response.audio.delta", **ref.fields(), delta=base64.b64encode(chunk).decode("ascii"))
            for chunk in split_audio(audio, fmt, max_ms)
        ]

    def response_audio_done(self, ref: ContentRef) -> list[Event]:
        return [self._event("response.audio.done", **ref.fields())]

    def response_audio_transcript_delta(self, ref: ContentRef, delta: str) -> list[Event]:
        return [self._event("response.audio_transcript.delta", **ref.fields(), delta=delta)]

    def response_audio_transcript_done(self, ref: ContentRef, transcript: str) -> list[Event]:
        return [self._event("response.audio_transcript.done", **ref.fields(), transcript=transcript)]

    def response_text_delta(self, ref: ContentRef, delta: str) -> list[Event]:
        return [self._event("response.text.delta", **ref.fields(), delta=delta)]

    def response_text_done(self, ref: ContentRef, text: str) -> list[Event]:
        return [self._event("response.text.done", **ref.fields(), text=text)]

    def response_function_call_arguments_delta(
        self, *, response_id: str, item_id: str, output_index: int, call_id: str, delta: str
    ) -> list[Event]:
        return [
            self._event(
                "response.function_call_arguments.delta",
                response_id=response_id,
                item_id=item_id,
                output_index=output_index,
                call_id=call_id,
                delta=delta,
            )
        ]

    def response_function_call_arguments_done(
        self, *, response_id: str, item_id: str, output_index: int, call_id: str, name: str, arguments: str
    ) -> list[Event]:
        """`name` is required by GA and by the Voice Live SDK, so it is always sent."""
        return [
            self._event(
                "response.function_call_arguments.done",
                response_id=response_id,
                item_id=item_id,
                output_index=output_index,
                call_id=call_id,
                name=name,
                arguments=arguments,
            )
        ]
