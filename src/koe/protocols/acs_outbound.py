"""ACS Call Automation media streaming, outbound direction (server → ACS, bidirectional streams only).

What koe sends is one of two typed messages, `OutboundAudioData(pcm)` and `StopAudio()` (`OutboundMessage`), and
`encode(message)` is the one place they become text: the documented PascalCase frames
`{"Kind":"AudioData","AudioData":{"Data":…},"StopAudio":null}` and `{"Kind":"StopAudio","AudioData":null,…}`
(spec §3.1, the shape Microsoft Learn documents). ACS defines no other outbound kind (no mark, no acknowledgement).

Emulator side: `parse_outbound(frame)` accepts every casing official code emits (spec §3.1): property names and the
`kind` value match case-insensitively, dispatch is on `kind` alone (a `stopAudio:{}` inside an AudioData message is
not a stop), extra fields are ignored, and an unknown kind comes back as `UnknownOutbound` for the caller to record.
Anything unusable raises `OutboundFormatError`. `parse_outbound(encode(m)) == m` for every message koe sends.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any, assert_never

import orjson

MAX_OUTBOUND_FRAME_BYTES = 4 * 1024 * 1024
"""Largest outbound message the emulator parses. No limit is documented; 4 MiB is about 87 s of 24 kHz audio."""
LARGE_OUTBOUND_AUDIO_BYTES = 1024 * 1024
"""Audio chunks above this are accepted but worth a warning (spec §3.2)."""


class OutboundFormatError(ValueError):
    """An outbound frame that ACS could not use: not JSON, no `kind`, bad base64 or an odd byte count."""


@dataclass(frozen=True, slots=True)
class OutboundAudioData:
    data: bytes
    """PCM16LE mono at the stream's negotiated rate: whole samples (an even byte count), any length."""


@dataclass(frozen=True, slots=True)
class StopAudio:
    """Flush the audio ACS has queued for playback (barge-in). Not sticky: the next `OutboundAudioData` plays."""


STOP_AUDIO = StopAudio()

OutboundMessage = OutboundAudioData | StopAudio
"""Every message koe sends to ACS."""


@dataclass(frozen=True, slots=True)
class UnknownOutbound:
    """A kind ACS does not define (`Transcription`, `StartAudio`…), as the emulator's parser reports it: ignored, but
    worth recording. koe never sends one."""

    kind: str


ParsedOutbound = OutboundMessage | UnknownOutbound

# Built by concatenation, not by a JSON library: this runs once per outbound chunk of every call, and `koe bench
# acs` measured it well under json.dumps (orjson is close, but still builds a dict first). Base64 needs no escaping.
_AUDIO_HEAD = '{"Kind":"AudioData","AudioData":{"Data":"'
_AUDIO_TAIL = '"},"StopAudio":null}'
_STOP_AUDIO_FRAME = '{"Kind":"StopAudio","AudioData":null,"StopAudio":{}}'


def encode(message: OutboundMessage) -> str:
    """The message as one text frame, in the documented PascalCase shape. Raises ValueError for audio of an odd
    byte count (not whole 16-bit samples)."""
    if isinstance(message, OutboundAudioData):
        pcm = message.data
        if len(pcm) % 2:
            raise ValueError(f"outbound audio must be whole 16-bit samples, got {len(pcm)} bytes")
        return _AUDIO_HEAD + binascii.b2a_base64(pcm, newline=False).decode("ascii") + _AUDIO_TAIL
    if isinstance(message, StopAudio):
        return _STOP_AUDIO_FRAME
    assert_never(message)


def parse_outbound(frame: str | bytes) -> ParsedOutbound:
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
        return STOP_AUDIO
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
