"""Call events: what the voice engine's events look like in the call registry and on `/v1/calls/{id}/events`.

`call_event(event)` is the one mapping from a `koe.voice.events` event to a registry event (a plain dict with a
`type`), shared by every door that runs the engine for a call (ACS transcribe and agent, Sora's `koe` service); the
event types and fields are documented in docs/api.md. Events callers do not see map to None.
"""

from __future__ import annotations

from typing import Any

from koe.voice import events as ev


def call_event(event: ev.Event, language: str | None = None) -> dict[str, Any] | None:
    """An engine event as a registry event, or None for events callers do not see. `language` replaces the
    transcript's detected one where the door has its own (Sora names it in every request)."""
    if isinstance(event, ev.SpeechStarted):
        return {
            "type": "speech.started",
            "participant": event.participant,
            "item_id": event.item_id,
            "audio_start_ms": event.audio_start_ms,
        }
    if isinstance(event, ev.SpeechStopped):
        return {
            "type": "speech.stopped",
            "participant": event.participant,
            "item_id": event.item_id,
            "audio_end_ms": event.audio_end_ms,
        }
    if isinstance(event, ev.TranscriptDelta):
        return {
            "type": "transcript.delta",
            "participant": event.participant,
            "item_id": event.item_id,
            "delta": event.delta,
            "text": event.text,
        }
    if isinstance(event, ev.TranscriptCompleted):
        return {
            "type": "transcript.completed",
            "participant": event.participant,
            "item_id": event.item_id,
            "text": event.text,
            "audio_start_ms": event.audio_start_ms,
            "audio_end_ms": event.audio_end_ms,
            "language": language or event.language,
        }
    if isinstance(event, ev.TranscriptFailed):
        return {
            "type": "transcript.failed",
            "participant": event.participant,
            "item_id": event.item_id,
            "message": event.message,
        }
    if isinstance(event, ev.ResponseCreated):
        return {"type": "response.started", "response_id": event.response_id}
    if isinstance(event, ev.ContentPartDone):
        return {"type": "response.text", "response_id": event.response_id, "text": event.text}
    if isinstance(event, ev.ResponseDone):
        return {
            "type": "response.done",
            "response_id": event.response_id,
            "status": event.status,
            "reason": event.reason,
        }
    if isinstance(event, ev.AudioInterrupted):
        return {
            "type": "barge_in",
            "response_id": event.response_id,
            "item_id": event.item_id,
            "played_ms": event.played_ms,
            "dropped_ms": event.dropped_ms,
        }
    if isinstance(event, ev.Error):
        # koe's own registry speaks koe's error names (`koe.voice.errors.ErrorKind`), not any door's protocol codes.
        return {"type": "error", "code": event.error.kind, "message": event.error.message}
    return None
