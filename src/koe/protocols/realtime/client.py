"""The client side of the Realtime API (sans-I/O): what koe sends to a remote Realtime endpoint (OpenAI Realtime GA
or beta, Azure Voice Live, or koe's own door) and what it reads back. The ACS door's bridge mode
(`koe.server.acs.modes.bridge`) and the Sora door's relay service (`koe.server.sora.services.relay`) use it.

Open the WebSocket with `upgrade_headers(dialect, api_key)`. Send `session_update(dialect, ClientSession(...))`
first (a conversation the endpoint answers aloud, or with `respond=False` a transcription-only session), then
`audio_append(pcm)` for each chunk of 24 kHz PCM16 and `commit()` when the input ends; each returns the text frame
to send. Feed every frame received to `parse_server_event()`: it returns one of the typed events below (`Ignored`
for the many types no client of koe's acts on), and raises `RealtimeClientError` for a frame it cannot read (not
JSON, no `type`, a field of the wrong type, bad audio). The dialect is koe's one vocabulary,
`koe.protocols.realtime.dialect.Dialect`; the event names of both generations (spec §2.1) are read either way.
"""

from __future__ import annotations

import binascii
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from koe.protocols.realtime.dialect import Dialect

INPUT_RATE = 24000
"""Every dialect's `pcm16` / `audio/pcm` is PCM16 at 24 kHz, in both directions; the sessions here ask for it."""
MAX_EVENT_BYTES = 16 * 1024 * 1024
"""Largest server event read (audio deltas are the large ones)."""
BETA_HEADER = {"OpenAI-Beta": "realtime=v1"}


class RealtimeClientError(ValueError):
    """A server event the client cannot read. Log it and count it; whether the session goes on is the caller's."""


@dataclass(frozen=True, slots=True)
class ClientSession:
    """What koe asks of a remote session, in no dialect's terms: server VAD, PCM16 at 24 kHz, input transcription."""

    respond: bool = True
    """True: a conversation, answered aloud. False: transcription only, no response is ever created."""
    transcription_model: str = "whisper-1"
    language: str | None = None
    """BCP-47 (`ja-JP`): Voice Live takes it whole, OpenAI its ISO-639-1 part."""
    silence_duration_ms: int = 500
    instructions: str | None = None
    voice: str | None = None


def upgrade_headers(dialect: Dialect, api_key: str | None) -> dict[str, str]:
    """The upgrade request's headers. Voice Live takes a key as `api-key` (a bearer token there is an Entra token,
    spec §1.1); on the OpenAI dialects the key goes both ways, as OpenAI reads a bearer token and Azure OpenAI
    `api-key` (spec §1.4), and the beta dialect adds `OpenAI-Beta`."""
    headers = dict(BETA_HEADER) if dialect is Dialect.BETA else {}
    if api_key is not None:
        headers["api-key"] = api_key
        if dialect is not Dialect.AZURE:
            headers["Authorization"] = f"Bearer {api_key}"
    return headers


def session_update(dialect: Dialect, session: ClientSession) -> str:
    """The first frame: `session.update` in the dialect's session shape (spec §2.3)."""
    body = _ga_session(session) if dialect is Dialect.GA else _flat_session(dialect, session)
    if session.respond and session.instructions:
        body["instructions"] = session.instructions
    return _encode({"type": "session.update", "session": body})


def _turn_detection(session: ClientSession, *, flat: bool) -> dict[str, Any]:
    turns: dict[str, Any] = {"type": "server_vad", "silence_duration_ms": session.silence_duration_ms}
    if flat and not session.respond:
        turns["create_response"] = False  # a GA transcription session has no responses to create
    return turns


def _ga_session(session: ClientSession) -> dict[str, Any]:
    audio_format = {"type": "audio/pcm", "rate": INPUT_RATE}
    transcription: dict[str, Any] = {"model": session.transcription_model}
    if session.language:
        transcription["language"] = session.language.split("-")[0].lower()  # ISO-639-1, as OpenAI asks
    audio_input = {"format": audio_format, "transcription": transcription,
                   "turn_detection": _turn_detection(session, flat=False)}  # fmt: skip
    if not session.respond:
        return {"type": "transcription", "audio": {"input": audio_input}}
    output: dict[str, Any] = {"format": audio_format}
    if session.voice:
        output["voice"] = session.voice
    return {"type": "realtime", "output_modalities": ["audio"], "audio": {"input": audio_input, "output": output}}


def _flat_session(dialect: Dialect, session: ClientSession) -> dict[str, Any]:
    transcription: dict[str, Any] = {"model": session.transcription_model}
    if session.language:
        # Voice Live takes the BCP-47 locale; OpenAI beta the ISO-639-1 code.
        language = session.language if dialect is Dialect.AZURE else session.language.split("-")[0].lower()
        transcription["language"] = language
    body: dict[str, Any] = {"modalities": ["text", "audio"] if session.respond else ["text"]}
    body["input_audio_format"] = "pcm16"
    if dialect is Dialect.AZURE:
        body["input_audio_sampling_rate"] = INPUT_RATE  # an Azure field; OpenAI refuses unknown ones
    if session.respond:
        body["output_audio_format"] = "pcm16"
    body["input_audio_transcription"] = transcription
    body["turn_detection"] = _turn_detection(session, flat=True)
    if session.respond and session.voice:
        body["voice"] = session.voice
    return body


_APPEND_HEAD = '{"type":"input_audio_buffer.append","audio":"'
_COMMIT = '{"type":"input_audio_buffer.commit"}'


def audio_append(pcm16le: bytes) -> str:
    """`input_audio_buffer.append` for PCM16 at `INPUT_RATE`. Concatenated: it goes out 50 times a second."""
    return _APPEND_HEAD + binascii.b2a_base64(pcm16le, newline=False).decode("ascii") + '"}'


def commit() -> str:
    return _COMMIT


def _encode(message: dict[str, Any]) -> str:
    return orjson.dumps(message).decode("utf-8")


# --- server events ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionReady:
    """`session.updated` (or beta `transcription_session.updated`): the session settings were accepted."""


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
    """`conversation.item.input_audio_transcription.delta`: what the caller said, so far."""

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
class ResponseCreated:
    response_id: str | None


@dataclass(frozen=True, slots=True)
class ResponseAudioDelta:
    """`response.audio.delta` (GA `response.output_audio.delta`): reply audio, PCM16 at `INPUT_RATE`."""

    response_id: str | None
    item_id: str
    audio: bytes


@dataclass(frozen=True, slots=True)
class ResponseAudioTranscriptDone:
    """`response.audio_transcript.done` (GA `response.output_audio_transcript.done`): what the reply said."""

    response_id: str | None
    transcript: str


@dataclass(frozen=True, slots=True)
class ResponseDone:
    response_id: str | None
    status: str | None
    reason: str | None
    """`status_details.reason` (`turn_detected`, `client_cancelled`, `max_output_tokens`…), when there is one."""


@dataclass(frozen=True, slots=True)
class UpstreamError:
    """`error`: `code` is the error's code, else its type, else empty."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Ignored:
    type: str


ServerEvent = (
    SessionReady
    | SpeechStarted
    | SpeechStopped
    | TranscriptDelta
    | TranscriptCompleted
    | TranscriptFailed
    | ResponseCreated
    | ResponseAudioDelta
    | ResponseAudioTranscriptDone
    | ResponseDone
    | UpstreamError
    | Ignored
)


def parse_server_event(frame: str | bytes) -> ServerEvent:
    """One server event, typed. Raises `RealtimeClientError`."""
    if len(frame) > MAX_EVENT_BYTES:
        raise RealtimeClientError(f"a server event is longer than {MAX_EVENT_BYTES} bytes")
    try:
        event = orjson.loads(frame)
    except orjson.JSONDecodeError as exc:
        raise RealtimeClientError(f"a server event is not JSON: {exc}") from exc
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        raise RealtimeClientError("a server event is not a JSON object with a type")
    kind: str = event["type"]
    parse = _PARSERS.get(kind)
    return Ignored(kind) if parse is None else parse(event)


def _text(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RealtimeClientError(f"'{key}' of {_name(obj)} is a {type(value).__name__}, not a string")
    return value


def _name(obj: dict[str, Any]) -> str:
    kind = obj.get("type")
    return kind if isinstance(kind, str) else "an object"


def _optional_text(obj: dict[str, Any], key: str) -> str | None:
    return _text(obj, key) if obj.get(key) is not None else None


def _ms(obj: dict[str, Any], key: str) -> int:
    value = obj.get(key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RealtimeClientError(f"'{key}' of {_name(obj)} is a {type(value).__name__}, not a number")
    return int(value)


def _object(obj: dict[str, Any], key: str) -> dict[str, Any]:
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RealtimeClientError(f"'{key}' of {_name(obj)} is a {type(value).__name__}, not an object")
    return value


def _audio_delta(event: dict[str, Any]) -> ResponseAudioDelta:
    try:
        pcm = binascii.a2b_base64(_text(event, "delta"), strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise RealtimeClientError(f"{event['type']} carries invalid base64: {exc}") from exc
    if len(pcm) % 2:
        raise RealtimeClientError(f"{event['type']} carries {len(pcm)} bytes: PCM16 needs an even number")
    return ResponseAudioDelta(_optional_text(event, "response_id"), _text(event, "item_id"), pcm)


def _response_done(event: dict[str, Any]) -> ResponseDone:
    response = _object(event, "response")
    reason = _optional_text(_object(response, "status_details"), "reason")
    return ResponseDone(_optional_text(response, "id"), _optional_text(response, "status"), reason)


def _error(event: dict[str, Any]) -> UpstreamError:
    error = _object(event, "error")
    # Lenient with the code: an error must reach the caller as an error, even with a numeric code.
    code = error.get("code") or error.get("type")
    return UpstreamError("" if code is None else str(code), _text(error, "message"))


_PARSERS: dict[str, Callable[[dict[str, Any]], ServerEvent]] = {
    "session.updated": lambda e: SessionReady(),
    "transcription_session.updated": lambda e: SessionReady(),
    "input_audio_buffer.speech_started": lambda e: SpeechStarted(_text(e, "item_id"), _ms(e, "audio_start_ms")),
    "input_audio_buffer.speech_stopped": lambda e: SpeechStopped(_text(e, "item_id"), _ms(e, "audio_end_ms")),
    "conversation.item.input_audio_transcription.delta": lambda e: TranscriptDelta(
        _text(e, "item_id"), _text(e, "delta")
    ),
    "conversation.item.input_audio_transcription.completed": lambda e: TranscriptCompleted(
        _text(e, "item_id"), _text(e, "transcript")
    ),
    "conversation.item.input_audio_transcription.failed": lambda e: TranscriptFailed(
        _text(e, "item_id"), _text(_object(e, "error"), "message") or "transcription failed"
    ),
    "response.created": lambda e: ResponseCreated(_optional_text(_object(e, "response"), "id")),
    "response.audio.delta": _audio_delta,
    "response.output_audio.delta": _audio_delta,
    "response.audio_transcript.done": lambda e: ResponseAudioTranscriptDone(
        _optional_text(e, "response_id"), _text(e, "transcript")
    ),
    "response.output_audio_transcript.done": lambda e: ResponseAudioTranscriptDone(
        _optional_text(e, "response_id"), _text(e, "transcript")
    ),
    "response.done": _response_done,
    "error": _error,
}
