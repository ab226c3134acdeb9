"""ACS Call Automation media streaming, outbound direction (server → ACS, bidirectional streams only).

Server side: `build_audio_data(pcm)` and `build_stop_audio()` give the documented PascalCase frames,
`{"Kind":"AudioData","AudioData":{"Data":…},"StopAudio":null}` and `{"Kind":"StopAudio","AudioData":null,…}`.

Emulator side: `parse_outbound(frame)` accepts every casing official code emits (spec §3.1): property names and the
`kind` value match case-insensitively, dispatch is on `kind` alone (a `stopAudio:{}` inside an AudioData message is
not a stop), extra fields are ignored, and an unknown kind comes back as `UnknownOutbound` for the caller to record.
Anything unusable raises `OutboundFormatError`.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import orjson

MAX_OUTBOUND_FRAME_BYTES = 4 * 1024 * 1024
"""Largest outbound message the emulator parses. No limit is documented; 4 MiB is about 87 s of 24 kHz audio."""
LARGE_OUTBOUND_AUDIO_BYTES = 1024 * 1024
"""Audio chunks above this are accepted but worth a warning (spec §3.2)."""
_STOP_AUDIO_FRAME = '{"Kind":"StopAudio","AudioData":null,"StopAudio":{}}'


class OutboundFormatError(ValueError):
    """An outbound frame that ACS could not use: not JSON, no `kind`, bad base64 or an odd byte count."""


@dataclass(frozen=True, slots=True)
class OutboundAudioData:
    data: bytes
    """PCM16LE mono at the stream's negotiated rate."""


@dataclass(frozen=True, slots=True)
class StopAudio:
    """Flush the audio queued for playback."""


@dataclass(frozen=True, slots=True)
class UnknownOutbound:
    """A kind ACS does not define (`Transcription`, `StartAudio`…): ignored, but worth recording."""

    kind: str


OutboundMessage = OutboundAudioData | StopAudio | UnknownOutbound


def build_audio_data(pcm: bytes) -> str:
    """The documented outbound audio frame (Python docs, .NET SDK) for raw PCM16LE bytes of even length."""
    if len(pcm) % 2:
        raise ValueError(f"outbound audio must be whole 16-bit samples, got {len(pcm)} bytes")
    return '{"Kind":"AudioData","AudioData":{"Data":"' + base64.b64encode(pcm).decode("ascii") + '"},"StopAudio":null}'


def build_stop_audio() -> str:
    return _STOP_AUDIO_FRAME


def parse_outbound(frame: str | bytes) -> OutboundMessage:
    """One outbound message in any casing official code uses. Raises `OutboundFormatError`."""
    if len(frame) > MAX_OUTBOUND_FRAME_BYTES:
        raise OutboundFormatError(f"frame of {len(frame)} bytes exceeds the {MAX_OUTBOUND_FRAME_BYTES}-byte limit")
    try:
        obj = orjson.loads(frame)
    except orjson.JSONDecodeError as exc:
        raise OutboundFormatError(f"frame is not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise OutboundFormatError(f"frame is a JSON {type(obj).__name__}, not an object")
    fields = _lower_keys(obj)
    kind = fields.get("kind")
    if not isinstance(kind, str):
        raise OutboundFormatError("frame has no string 'kind'")
    lowered = kind.lower()
    if lowered == "stopaudio":
        return StopAudio()
    if lowered != "audiodata":
        return UnknownOutbound(kind[:200])
    payload = fields.get("audiodata")
    if not isinstance(payload, dict):
        raise OutboundFormatError("AudioData message has no 'AudioData' object")
    data = _lower_keys(payload).get("data")
    if not isinstance(data, str):
        raise OutboundFormatError("AudioData message has no base64 'Data' string")
    try:
        pcm = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise OutboundFormatError(f"AudioData 'Data' is not valid base64: {exc}") from exc
    if len(pcm) % 2:
        raise OutboundFormatError(f"AudioData carries {len(pcm)} bytes: PCM16 needs an even number")
    return OutboundAudioData(pcm)


def _lower_keys(obj: dict[str, Any]) -> dict[str, Any]:
    # When two spellings of one key are present the first wins; no official producer sends both.
    out: dict[str, Any] = {}
    for key, value in obj.items():
        out.setdefault(key.lower(), value)
    return out
