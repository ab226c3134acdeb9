"""Rendering the voice engine's events as Realtime server events, in the connection's dialect.

`Renderer.render(event)` returns the protocol events for one engine event, in the order the spec's canonical
sequences put them (§5): output items also join the conversation (`conversation.item.created`, or GA `added` and
`done`), audio leaves in the session's output format in deltas of at most 500 ms, and every response ends with a
`response.done` that lists its items with their final status and usage (a failed one comes after an `error` event
saying why, as OpenAI's do).
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

from koe.protocols import realtime as rt
from koe.protocols.realtime.formats import encode_audio
from koe.protocols.realtime.responses import StatusDetails
from koe.server.realtime.mapping import FAILURE_CODES, protocol_item, realtime_error
from koe.voice import events as ev
from koe.voice.conversation import Conversation

Event = dict[str, Any]
TIMING_EVENT = "koe.response.timing"
"""koe's own event (only for clients that ask with `?koe_timings=1`): where a reply's latency went."""
AUDIO_TOKENS_PER_S = 10
"""Realtime usage counts audio in tokens; koe reports its audio at this many tokens a second."""


class Renderer:
    def __init__(self, events: rt.ServerEvents, conversation: Conversation, *, timings: bool = False) -> None:
        self.events = events
        self.conversation = conversation
        self.timings = timings
        self.config = rt.SessionConfig()
        """The session's settings: the door keeps this current (formats, voice, modalities)."""
        self.conversation_id = rt.new_conversation_id()
        self._requested: dict[str, rt.SessionConfig] = {}
        self._responses: dict[str, rt.Response] = {}
        self.transcription = False
        self._streamed: set[str] = set()
        """User items whose transcript already went out as partial deltas."""

    def expect_response(self, request_id: str, settings: rt.SessionConfig) -> None:
        """A `response.create` asked for these settings; the engine's `ResponseCreated` will carry `request_id`."""
        self._requested[request_id] = settings

    def _ref(self, response_id: str, item_id: str, output_index: int, content_index: int) -> rt.ContentRef:
        return rt.ContentRef(response_id, item_id, output_index, content_index)

    def _item(self, item: Any, include_audio: bool = False) -> rt.ConversationItem:
        cfg = self.config
        return protocol_item(item, cfg.input_audio_format, cfg.output_audio_format, include_audio)

    def _previous(self, item_id: str) -> str | None:
        previous = None
        for item in self.conversation.items:
            if item.id == item_id:
                return previous
            previous = item.id
        return previous

    def retrieved(self, item: Any) -> list[Event]:
        return self.events.conversation_item_retrieved(self._item(item, include_audio=True))

    def render(self, event: ev.Event) -> list[Event]:
        e = self.events
        if isinstance(event, ev.ResponseAudioDelta):
            ref = self._ref(event.response_id, event.item_id, event.output_index, event.content_index)
            fmt = self.config.output_audio_format
            return e.response_audio_delta(ref, encode_audio(event.pcm, fmt), fmt)
        if isinstance(event, ev.ResponseTextDelta):
            ref = self._ref(event.response_id, event.item_id, event.output_index, event.content_index)
            if event.audio:
                return e.response_audio_transcript_delta(ref, event.delta)
            return e.response_text_delta(ref, event.delta)
        if isinstance(event, ev.SpeechStarted):
            return e.input_audio_buffer_speech_started(audio_start_ms=event.audio_start_ms, item_id=event.item_id)
        if isinstance(event, ev.SpeechStopped):
            return e.input_audio_buffer_speech_stopped(audio_end_ms=event.audio_end_ms, item_id=event.item_id)
        if isinstance(event, ev.InputCommitted):
            return e.input_audio_buffer_committed(item_id=event.item_id, previous_item_id=event.previous_item_id)
        if isinstance(event, ev.InputCleared):
            return e.input_audio_buffer_cleared()
        if isinstance(event, ev.InputTimeout):
            return e.input_audio_buffer_timeout_triggered(
                audio_start_ms=event.audio_start_ms, audio_end_ms=event.audio_end_ms, item_id=event.item_id
            )
        if isinstance(event, ev.ItemAdded):
            return e.conversation_item_created(self._item(event.item), previous_item_id=event.previous_item_id)
        if isinstance(event, ev.ItemTruncated):
            return e.conversation_item_truncated(
                item_id=event.item_id, content_index=event.content_index, audio_end_ms=event.audio_end_ms
            )
        if isinstance(event, ev.ItemDeleted):
            return e.conversation_item_deleted(item_id=event.item_id)
        if isinstance(event, ev.TranscriptDelta):
            if not self.transcription or not event.delta:
                return []
            self._streamed.add(event.item_id)
            return e.input_audio_transcription_delta(item_id=event.item_id, delta=event.delta)
        if isinstance(event, ev.TranscriptCompleted):
            if not self.transcription:
                return []
            out = []
            if event.item_id not in self._streamed and event.text:
                # Clients that assemble the transcript from deltas get it whole, just before `completed`.
                out = e.input_audio_transcription_delta(item_id=event.item_id, delta=event.text)
            self._streamed.discard(event.item_id)
            return out + e.input_audio_transcription_completed(
                item_id=event.item_id, transcript=event.text, audio_seconds=event.duration_s, language=event.language
            )
        if isinstance(event, ev.TranscriptFailed):
            if not self.transcription:
                return []
            error = rt.RealtimeError(event.message, code="transcription_failed", error_type="server_error")
            return e.input_audio_transcription_failed(item_id=event.item_id, error=error)
        if isinstance(event, ev.ResponseCreated):
            return self._response_created(event)
        if isinstance(event, ev.OutputItemAdded):
            item = self._item(event.item)
            out = e.response_output_item_added(
                response_id=event.response_id, output_index=event.output_index, item=item
            )
            if self._in_conversation(event.response_id):
                out += e.conversation_item_added(item, previous_item_id=self._previous(event.item.id))
            return out
        if isinstance(event, ev.ContentPartAdded):
            ref = self._ref(event.response_id, event.item_id, event.output_index, event.content_index)
            part = rt.ContentPart("audio", transcript="") if event.kind == "audio" else rt.ContentPart("text", text="")
            return e.response_content_part_added(ref, part)
        if isinstance(event, ev.ContentPartDone):
            ref = self._ref(event.response_id, event.item_id, event.output_index, event.content_index)
            if event.kind == "audio":
                return (
                    e.response_audio_done(ref)
                    + e.response_audio_transcript_done(ref, event.text)
                    + e.response_content_part_done(ref, rt.ContentPart("audio", transcript=event.text))
                )
            return e.response_text_done(ref, event.text) + e.response_content_part_done(
                ref, rt.ContentPart("text", text=event.text)
            )
        if isinstance(event, ev.FunctionCallArgumentsDelta):
            return e.response_function_call_arguments_delta(
                response_id=event.response_id,
                item_id=event.item_id,
                output_index=event.output_index,
                call_id=event.call_id,
                delta=event.delta,
            )
        if isinstance(event, ev.FunctionCallArgumentsDone):
            return e.response_function_call_arguments_done(
                response_id=event.response_id,
                item_id=event.item_id,
                output_index=event.output_index,
                call_id=event.call_id,
                name=event.name,
                arguments=event.arguments,
            )
        if isinstance(event, ev.OutputItemDone):
            item = self._item(event.item)
            out = e.response_output_item_done(response_id=event.response_id, output_index=event.output_index, item=item)
            if self._in_conversation(event.response_id):
                out += e.conversation_item_done(item, previous_item_id=self._previous(event.item.id))
            return out
        if isinstance(event, ev.ResponseDone):
            return self._response_done(event)
        if isinstance(event, ev.AudioInterrupted):
            return e.output_audio_buffer_cleared(response_id=event.response_id or "")
        if isinstance(event, ev.ResponseTiming):
            return [self._timing(event)] if self.timings else []
        if isinstance(event, ev.Warning):
            return e.warning(rt.RealtimeWarning(event.message, code=event.code))
        if isinstance(event, ev.Error):
            return e.error(realtime_error(event.error).with_event_id(event.cause))
        return []  # ItemUpdated: the transcript and truncation events already told the client

    def _in_conversation(self, response_id: str) -> bool:
        response = self._responses.get(response_id)
        return response is None or response.conversation_id is not None

    def _response_created(self, event: ev.ResponseCreated) -> list[Event]:
        settings = self._requested.pop(event.request_id, self.config) if event.request_id else self.config
        response = rt.Response.start(
            event.response_id,
            settings,
            conversation_id=self.conversation_id if event.in_conversation else None,
            metadata=event.metadata,
        )
        self._responses[event.response_id] = response
        return self.events.response_created(response) + self.events.rate_limits_updated()

    def _response_done(self, event: ev.ResponseDone) -> list[Event]:
        response = self._responses.pop(event.response_id, None) or rt.Response.start(event.response_id, self.config)
        details: StatusDetails | None = None
        if event.status == "cancelled":
            details = rt.cancelled_details("turn_detected" if event.reason == "turn_detected" else "client_cancelled")
        elif event.status == "incomplete":
            details = StatusDetails("incomplete", event.reason or "max_output_tokens")
        elif event.status == "failed":
            code = FAILURE_CODES[event.failure.reason] if event.failure is not None else "engine_error"
            details = StatusDetails(
                "failed", error={"type": "server_error", "code": code, "message": event.reason or ""}
            )
        usage = rt.Usage(
            input_text_tokens=event.usage.input_tokens,
            output_text_tokens=event.usage.output_tokens,
            output_audio_tokens=event.usage.output_audio_ms * AUDIO_TOKENS_PER_S // 1000,
        )
        output = tuple(self._item(item) for item in event.output)
        done = replace(response, status=event.status, status_details=details, output=output, usage=usage)
        return self.events.response_done(done)

    def _timing(self, event: ev.ResponseTiming) -> Event:
        return {
            "type": TIMING_EVENT,
            "event_id": rt.new_event_id(),
            "response_id": event.response_id,
            **{field.name: getattr(event, field.name) for field in fields(event) if field.name.endswith("_ms")},
        }
