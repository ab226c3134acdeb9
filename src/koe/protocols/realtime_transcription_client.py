"""The client side of a Realtime transcription session (sans-I/O): what the Sora relay sends to and reads from an
OpenAI Realtime (`session.type = "transcription"`, GA) or Azure Voice Live endpoint.

Send `session_update(kind, …)` first, then `audio_append(pcm)` for each chunk of 24 kHz PCM16, and `commit()` when
the input ends. Feed every text frame received to `parse_server_event()`: it returns one of the typed events below
(or `Ignored` for the many event types a transcription relay has no use for), and raises `RelayProtocolError` for a
frame that is not a JSON object with a `type`.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any, Literal

RelayKind = Literal["openai", "voicelive"]
INPUT_RATE = 24000
"""Both APIs take PCM16 at 24 kHz."""
MAX_EVENT_CHARS = 1 << 20


class RelayProtocolError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    item_id: str
    audio_start_ms: int


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    item_id: str
    audio_end_ms: int


@dataclass(frozen=True, slots=True)
class TranscriptDelta:
    item_id: str
    delta: str


@dataclass(frozen=True, slots=True)
class TranscriptCompleted:
    item_id: str
    transcript: str


@dataclass(frozen=True, slots=True)
class TranscriptFailed:
    item_id: str
    message: str


@dataclass(frozen=True, slots=True)
class UpstreamError:
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class SessionReady:
    """`session.updated`: the transcription settings were accepted."""


@dataclass(frozen=True, slots=True)
class Ignored:
    type: str


RelayEvent = (
    SpeechStarted
    | SpeechStopped
    | TranscriptDelta
    | TranscriptCompleted
    | TranscriptFailed
    | UpstreamError
    | SessionReady
    | Ignored
)


def session_update(
    kind: RelayKind, *, model: str, language: str | None, silence_duration_ms: int = 500
) -> dict[str, Any]:
    """The first message: a transcription-only session with server VAD (no responses are ever created)."""
    base_language = language.split("-")[0].lower() if language else None
    if kind == "openai":
        transcription: dict[str, Any] = {"model": model}
        if base_language:
            transcription["language"] = base_language  # ISO-639-1, as OpenAI asks
        return {
            "type": "session.update",
            "session": {
                "type": "transcription",
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcm", "rate": INPUT_RATE},
                        "transcription": transcription,
                        "turn_detection": {"type": "server_vad", "silence_duration_ms": silence_duration_ms},
                    }
                },
            },
        }
    voicelive_transcription: dict[str, Any] = {"model": model}
    if language:
        voicelive_transcription["language"] = language  # Voice Live takes the BCP-47 locale
    return {
        "type": "session.update",
        "session": {
            "modalities": ["text"],
            "input_audio_format": "pcm16",
            "input_audio_sampling_rate": INPUT_RATE,
            "input_audio_transcription": voicelive_transcription,
            "turn_detection": {
                "type": "server_vad",
                "silence_duration_ms": silence_duration_ms,
                "create_response": False,
            },
        },
    }


def audio_append(pcm16le: bytes) -> dict[str, Any]:
    return {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm16le).decode("ascii")}


def commit() -> dict[str, Any]:
    return {"type": "input_audio_buffer.commit"}


def encode(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


def parse_server_event(text: str | bytes) -> RelayEvent:
    if len(text) > MAX_EVENT_CHARS:
        raise RelayProtocolError(f"a server event is longer than {MAX_EVENT_CHARS} characters")
    try:
        event = json.loads(text)
    except ValueError as exc:
        raise RelayProtocolError(f"a server event is not JSON: {exc}") from exc
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        raise RelayProtocolError("a server event is not a JSON object with a type")
    kind: str = event["type"]
    item_id = str(event.get("item_id", ""))
    if kind == "input_audio_buffer.speech_started":
        return SpeechStarted(item_id, int(event.get("audio_start_ms", 0)))
    if kind == "input_audio_buffer.speech_stopped":
        return SpeechStopped(item_id, int(event.get("audio_end_ms", 0)))
    if kind == "conversation.item.input_audio_transcription.delta":
        return TranscriptDelta(item_id, str(event.get("delta", "")))
    if kind == "conversation.item.input_audio_transcription.completed":
        return TranscriptCompleted(item_id, str(event.get("transcript", "")))
    if kind == "conversation.item.input_audio_transcription.failed":
        error = _error_object(event)
        return TranscriptFailed(item_id, str(error.get("message", "transcription failed")))
    if kind == "error":
        error = _error_object(event)
        return UpstreamError(str(error.get("code") or error.get("type") or "error"), str(error.get("message", "")))
    if kind in ("session.updated", "transcription_session.updated"):
        return SessionReady()
    return Ignored(kind)


def _error_object(event: dict[str, Any]) -> dict[str, Any]:
    error = event.get("error")
    return error if isinstance(error, dict) else {}
