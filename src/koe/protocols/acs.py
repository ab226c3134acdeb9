"""ACS Call Automation media streaming, inbound direction (ACS → server): the messages, their wire form, and the
per-connection rules.

Server side: make one `InboundStream` per WebSocket connection and call `InboundStream.receive(frame)` for every
frame. It returns a typed message (`AudioMetadata`, `AudioData`, `DtmfData`, `TranscriptionMetadata`,
`TranscriptionData`, or `UnknownKind` for kinds it does not know), raises `MalformedFrame` for a frame to log, count
and skip, and `ProtocolViolation` (carrying a WebSocket close code and reason) when the connection must close.

Emulator side: `encode(message)` renders a message exactly as ACS spells it (camelCase keys, PascalCase `kind`
first, `participantRawID` with a capital ID, ISO-8601 timestamps with milliseconds and `Z`); see the spec §2 and
§11.2 in shared/specs/acs-media-streaming.md. The outbound direction lives in `koe.protocols.acs_outbound`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from koe.protocols.websocket import CloseCode

FRAME_MS = 20
SUPPORTED_SAMPLE_RATES = (16000, 24000)
MAX_FRAME_BYTES = 64 * 1024
"""Largest inbound WebSocket message accepted. ACS keeps each message under 2048 bytes; anything far larger is
not ACS and is skipped before it is parsed."""
MAX_AUDIO_BYTES = 16 * 1024
"""Largest decoded audio payload in one `AudioData` (a 20 ms frame is 640 or 960 bytes)."""
MAX_TEXT_CHARS = 4096
"""Longest DTMF, participant or transcription string kept."""


class AcsProtocolError(Exception):
    """Base of the errors `InboundStream.receive()` raises."""


class MalformedFrame(AcsProtocolError):
    """One frame that cannot be understood. Log it, count it, and keep the call going."""


class FrameTooLarge(MalformedFrame):
    """A frame over `MAX_FRAME_BYTES`, or audio over `MAX_AUDIO_BYTES`; skipped unparsed."""


class ProtocolViolation(AcsProtocolError):
    """The peer broke the stream's rules (audio before `AudioMetadata`, an unsupported format): close the socket."""

    def __init__(self, reason: str, close_code: int = CloseCode.POLICY_VIOLATION) -> None:
        super().__init__(reason)
        self.reason = reason[:120]  # a close reason must fit in 123 bytes
        self.close_code = close_code


@dataclass(frozen=True, slots=True)
class AudioMetadata:
    subscription_id: str
    sample_rate: int
    encoding: str = "PCM"
    channels: int = 1
    length: int | None = None
    """Bytes per 20 ms frame (640 at 16 kHz, 960 at 24 kHz); newer SDKs no longer surface it."""


@dataclass(frozen=True, slots=True)
class AudioData:
    data: bytes
    """Raw PCM16LE mono at the metadata's rate: one 20 ms frame, or empty for some silent frames."""
    timestamp: str
    participant_raw_id: str | None = None
    """The speaker in unmixed streams; absent (None) in mixed ones."""
    silent: bool = False


@dataclass(frozen=True, slots=True)
class DtmfData:
    data: str
    timestamp: str | None = None
    participant_raw_id: str | None = None


@dataclass(frozen=True, slots=True)
class TranscriptionMetadata:
    subscription_id: str
    locale: str
    call_connection_id: str = ""
    correlation_id: str = ""


@dataclass(frozen=True, slots=True)
class TranscriptionWord:
    text: str
    offset: int
    """100 ns ticks."""
    duration: int


@dataclass(frozen=True, slots=True)
class TranscriptionData:
    text: str
    result_status: str
    """"Final" or "Intermediate"."""
    offset: int = 0
    duration: int = 0
    confidence: float = 0.0
    participant_raw_id: str | None = None
    words: tuple[TranscriptionWord, ...] = ()
    format: str = "display"


@dataclass(frozen=True, slots=True)
class UnknownKind:
    """A kind this module does not know (ignored per spec, but counted)."""

    kind: str


InboundMessage = AudioMetadata | AudioData | DtmfData | TranscriptionMetadata | TranscriptionData | UnknownKind


def iso_timestamp(epoch_s: float) -> str:
    """ACS's timestamp format: `2024-11-15T19:16:12.925Z` (UTC, milliseconds, `Z`)."""
    moment = datetime.fromtimestamp(epoch_s, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def frame_bytes(sample_rate: int) -> int:
    """Bytes of PCM16 in one 20 ms frame at `sample_rate`."""
    return sample_rate * FRAME_MS // 1000 * 2


# --- parsing ------------------------------------------------------------------------------------------------


def parse_frame(frame: str | bytes) -> InboundMessage:
    """One inbound message from a text frame or a binary frame holding JSON. Raises `MalformedFrame`."""
    if len(frame) > MAX_FRAME_BYTES:
        raise FrameTooLarge(f"frame of {len(frame)} bytes exceeds the {MAX_FRAME_BYTES}-byte limit")
    try:
        obj = orjson.loads(frame)
    except orjson.JSONDecodeError as exc:
        raise MalformedFrame(f"frame is not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise MalformedFrame(f"frame is a JSON {type(obj).__name__}, not an object")
    kind = _get(obj, "kind")
    if not isinstance(kind, str):
        raise MalformedFrame("frame has no string 'kind'")
    known = _KINDS.get(kind) or _KINDS.get(kind.lower())
    if known is None:
        return UnknownKind(kind[:MAX_TEXT_CHARS])
    payload_key, parser = known
    payload = _get(obj, payload_key)
    if not isinstance(payload, dict):
        raise MalformedFrame(f"{kind} frame has no '{payload_key}' object")
    return parser(payload)


_MISSING = object()


def _get(obj: dict[str, Any], key: str) -> Any:
    """`obj[key]`, falling back to a case-insensitive match: ACS spells keys exactly, but being lenient costs
    little on the server side."""
    value = obj.get(key, _MISSING)
    if value is not _MISSING:
        return value
    lowered = key.lower()
    for name, value in obj.items():
        if name.lower() == lowered:
            return value
    return None


def _str(obj: dict[str, Any], key: str, default: str | None = None) -> str | None:
    value = _get(obj, key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise MalformedFrame(f"'{key}' must be a string, got {type(value).__name__}")
    return value[:MAX_TEXT_CHARS]


def _int(obj: dict[str, Any], key: str, default: int | None = None) -> int | None:
    value = _get(obj, key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedFrame(f"'{key}' must be an integer, got {type(value).__name__}")
    return value


def _float(obj: dict[str, Any], key: str) -> float:
    value = _get(obj, key)
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MalformedFrame(f"'{key}' must be a number, got {type(value).__name__}")
    return float(value)


def _parse_metadata(payload: dict[str, Any]) -> AudioMetadata:
    rate = _int(payload, "sampleRate")
    if rate is None:
        raise MalformedFrame("AudioMetadata has no integer 'sampleRate'")
    return AudioMetadata(
        subscription_id=_str(payload, "subscriptionId", "") or "",
        sample_rate=rate,
        encoding=_str(payload, "encoding", "PCM") or "PCM",
        channels=_int(payload, "channels", 1) or 1,
        length=_int(payload, "length"),
    )


def _parse_audio(payload: dict[str, Any]) -> AudioData:
    text = _get(payload, "data")
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise MalformedFrame(f"AudioData 'data' must be a base64 string, got {type(text).__name__}")
    if len(text) > MAX_AUDIO_BYTES * 4 // 3 + 4:
        raise FrameTooLarge(f"AudioData carries {len(text)} base64 characters, over {MAX_AUDIO_BYTES} bytes")
    try:
        pcm = binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise MalformedFrame(f"AudioData 'data' is not valid base64: {exc}") from exc
    if len(pcm) % 2:
        raise MalformedFrame(f"AudioData carries {len(pcm)} bytes: PCM16 needs an even number")
    silent = _get(payload, "silent")
    if silent is not None and not isinstance(silent, bool):
        raise MalformedFrame("AudioData 'silent' must be a boolean")
    participant = _str(payload, "participantRawID")
    return AudioData(
        data=pcm,
        timestamp=_str(payload, "timestamp", "") or "",
        participant_raw_id=participant or None,  # Java maps "" to null, and so do we
        silent=bool(silent),
    )


def _parse_dtmf(payload: dict[str, Any]) -> DtmfData:
    tone = _str(payload, "data")
    if not tone:
        raise MalformedFrame("DtmfData has no 'data' tone")
    return DtmfData(tone, _str(payload, "timestamp"), _str(payload, "participantRawID") or None)


def _parse_transcription_metadata(payload: dict[str, Any]) -> TranscriptionMetadata:
    return TranscriptionMetadata(
        subscription_id=_str(payload, "subscriptionId", "") or "",
        locale=_str(payload, "locale", "") or "",
        call_connection_id=_str(payload, "callConnectionId", "") or "",
        correlation_id=_str(payload, "correlationId", "") or "",
    )


def _parse_transcription(payload: dict[str, Any]) -> TranscriptionData:
    raw_words = _get(payload, "words") or []
    if not isinstance(raw_words, list):
        raise MalformedFrame("TranscriptionData 'words' must be an array")
    words = []
    for item in raw_words[:1000]:
        if not isinstance(item, dict):
            raise MalformedFrame("TranscriptionData word must be an object")
        words.append(
            TranscriptionWord(
                _str(item, "text", "") or "", _int(item, "offset", 0) or 0, _int(item, "duration", 0) or 0
            )
        )
    return TranscriptionData(
        text=_str(payload, "text", "") or "",
        result_status=_str(payload, "resultStatus", "Final") or "Final",
        offset=_int(payload, "offset", 0) or 0,
        duration=_int(payload, "duration", 0) or 0,
        confidence=_float(payload, "confidence"),
        participant_raw_id=_str(payload, "participantRawID") or None,
        words=tuple(words),
        format=_str(payload, "format", "display") or "display",
    )


_PARSERS: dict[str, Callable[[dict[str, Any]], InboundMessage]] = {
    "AudioMetadata": _parse_metadata,
    "AudioData": _parse_audio,
    "DtmfData": _parse_dtmf,
    "TranscriptionMetadata": _parse_transcription_metadata,
    "TranscriptionData": _parse_transcription,
}
# kind (as spelled, and lowercased) → (payload key, parser); the exact spelling is the fast path.
_KINDS: dict[str, tuple[str, Callable[[dict[str, Any]], InboundMessage]]] = {
    spelling: (kind[0].lower() + kind[1:], parser)
    for kind, parser in _PARSERS.items()
    for spelling in (kind, kind.lower())
}


# --- per-connection rules -----------------------------------------------------------------------------------


@dataclass
class InboundStats:
    frames: int = 0
    audio_frames: int = 0
    silent_frames: int = 0
    dtmf: int = 0
    malformed: int = 0
    out_of_order: int = 0
    unknown_kinds: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "frames": self.frames,
            "audio_frames": self.audio_frames,
            "silent_frames": self.silent_frames,
            "dtmf": self.dtmf,
            "malformed": self.malformed,
            "out_of_order": self.out_of_order,
            "unknown_kinds": dict(self.unknown_kinds),
        }


class InboundStream:
    """The rules for one WebSocket connection: `AudioMetadata` comes first and fixes the format; audio before it
    is a violation; a frame older than the speaker's previous one is skipped as out of order."""

    def __init__(self, *, require_metadata_first: bool = True) -> None:
        self.require_metadata_first = require_metadata_first
        self.metadata: AudioMetadata | None = None
        self.stats = InboundStats()
        self._last_timestamp: dict[str | None, str] = {}

    @property
    def sample_rate(self) -> int | None:
        return self.metadata.sample_rate if self.metadata else None

    def receive(self, frame: str | bytes) -> InboundMessage:
        """Parse and check one frame. Raises `MalformedFrame` (skip it) or `ProtocolViolation` (close)."""
        self.stats.frames += 1
        try:
            message = parse_frame(frame)
        except MalformedFrame:
            self.stats.malformed += 1
            raise
        if isinstance(message, AudioMetadata):
            self._accept_metadata(message)
        elif isinstance(message, AudioData):
            self._check_audio(message)
        elif isinstance(message, DtmfData):
            self.stats.dtmf += 1
        elif isinstance(message, UnknownKind):
            self.stats.unknown_kinds[message.kind] = self.stats.unknown_kinds.get(message.kind, 0) + 1
        return message

    def _accept_metadata(self, metadata: AudioMetadata) -> None:
        if metadata.encoding.upper() != "PCM" or metadata.channels != 1:
            raise ProtocolViolation(
                f"unsupported audio: encoding {metadata.encoding!r}, {metadata.channels} channels (need PCM mono)",
                CloseCode.UNSUPPORTED_DATA,
            )
        if metadata.sample_rate not in SUPPORTED_SAMPLE_RATES:
            raise ProtocolViolation(
                f"unsupported sampleRate {metadata.sample_rate} (need 16000 or 24000)", CloseCode.UNSUPPORTED_DATA
            )
        if self.metadata is not None and self.metadata.sample_rate != metadata.sample_rate:
            raise ProtocolViolation("sampleRate changed mid-stream; reconnect to change the format")
        self.metadata = metadata

    def _check_audio(self, audio: AudioData) -> None:
        if self.metadata is None and self.require_metadata_first:
            raise ProtocolViolation("AudioData before AudioMetadata")
        previous = self._last_timestamp.get(audio.participant_raw_id)
        # ISO-8601 UTC strings of one format sort by time, so a string comparison is enough.
        if previous is not None and audio.timestamp and audio.timestamp < previous:
            self.stats.malformed += 1
            self.stats.out_of_order += 1
            raise MalformedFrame(f"AudioData timestamp {audio.timestamp} is older than the previous {previous}")
        if audio.timestamp:
            self._last_timestamp[audio.participant_raw_id] = audio.timestamp
        self.stats.audio_frames += 1
        if audio.silent:
            self.stats.silent_frames += 1


# --- building (the emulator's side) -------------------------------------------------------------------------


def encode(message: InboundMessage) -> str:
    """The message as ACS sends it: one JSON text frame, `kind` first, exact key spellings."""
    body: dict[str, Any]
    if isinstance(message, AudioMetadata):
        body = {"subscriptionId": message.subscription_id, "encoding": message.encoding}
        body |= {"sampleRate": message.sample_rate, "channels": message.channels}
        body["length"] = message.length if message.length is not None else frame_bytes(message.sample_rate)
        return _frame("AudioMetadata", body)
    if isinstance(message, AudioData):
        body = {"timestamp": message.timestamp}
        if message.participant_raw_id is not None:
            body["participantRawID"] = message.participant_raw_id
        body["data"] = base64.b64encode(message.data).decode("ascii")
        body["silent"] = message.silent
        return _frame("AudioData", body)
    if isinstance(message, DtmfData):
        body = {"data": message.data}
        if message.timestamp is not None:
            body["timestamp"] = message.timestamp
        if message.participant_raw_id is not None:
            body["participantRawID"] = message.participant_raw_id
        return _frame("DtmfData", body)
    if isinstance(message, TranscriptionMetadata):
        body = {"subscriptionId": message.subscription_id, "locale": message.locale}
        body |= {"callConnectionId": message.call_connection_id, "correlationId": message.correlation_id}
        return _frame("TranscriptionMetadata", body)
    if isinstance(message, TranscriptionData):
        body = {"text": message.text, "format": message.format, "confidence": message.confidence}
        body |= {"offset": message.offset, "duration": message.duration}
        body["words"] = [{"text": w.text, "offset": w.offset, "duration": w.duration} for w in message.words]
        if message.participant_raw_id is not None:
            body["participantRawID"] = message.participant_raw_id
        body["resultStatus"] = message.result_status
        return _frame("TranscriptionData", body)
    raise ValueError(f"ACS never sends {message!r}: only known kinds can be encoded")


def _frame(kind: str, payload: dict[str, Any]) -> str:
    return orjson.dumps({"kind": kind, kind[0].lower() + kind[1:]: payload}).decode("utf-8")
