"""Client → server events of the Realtime API: one frozen dataclass per event, and `parse_client_event()`.

Call `parse_client_event(text, dialect, input_format=config.input_audio_format)` for every text frame. It returns one
of the `ClientEvent` classes below, with both dialects' shapes normalized (GA `audio.output.voice` and beta `voice`
end up in the same field), or raises `RealtimeError` carrying `type`, `code`, `message`, `param` and the client's
`event_id`, which the door renders with `ServerEvents.error()` and keeps the socket open (spec §6, §11.8-9).

Azure-only events (`input_audio.turn.*`, `input_text.*`, `session.avatar.connect`, `mcp_approval_response`, ...) parse
on the azure dialect only; elsewhere they are unknown types, as they would be on OpenAI.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from koe.protocols.realtime import _json as j
from koe.protocols.realtime._json import JsonObject
from koe.protocols.realtime._response_parse import parse_response_create
from koe.protocols.realtime._session_parse import parse_session
from koe.protocols.realtime.dialect import Dialect
from koe.protocols.realtime.errors import INVALID_JSON, RealtimeError, RealtimeWarning
from koe.protocols.realtime.formats import PCM16_24K, AudioFormat, check_audio
from koe.protocols.realtime.items import ConversationItem, ItemReference, MessageItem, decode_b64_audio, parse_item
from koe.protocols.realtime.responses import ResponseOverrides
from koe.protocols.realtime.session import SessionPatch

MAX_EVENT_BYTES = 16 * 1024 * 1024
"""Largest client text frame: a 15 MiB audio append plus its envelope. Configure the WebSocket to match."""


@dataclass(frozen=True, slots=True, kw_only=True)
class _Event:
    event_id: str | None = None
    """The client's id for the event (absent, null and "" all give None), echoed in errors it causes."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionUpdate(_Event):
    patch: SessionPatch
    """Apply with `apply_session_update(config, patch)`."""
    warnings: tuple[RealtimeWarning, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class TranscriptionSessionUpdate(_Event):
    """Beta/Azure `transcription_session.update`: a session that only transcribes (patch sets `type`)."""

    patch: SessionPatch
    warnings: tuple[RealtimeWarning, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class InputAudioBufferAppend(_Event):
    audio: bytes
    """Raw bytes in the session's input format, whole samples; `formats.decode_audio()` makes PCM16 of them."""


@dataclass(frozen=True, slots=True, kw_only=True)
class InputAudioBufferCommit(_Event):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class InputAudioBufferClear(_Event):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class OutputAudioBufferClear(_Event):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class ConversationItemCreate(_Event):
    item: ConversationItem
    previous_item_id: str | None = None
    """None appends at the end; `items.ROOT` inserts at the start."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ConversationItemRetrieve(_Event):
    item_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ConversationItemDelete(_Event):
    item_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ConversationItemTruncate(_Event):
    item_id: str
    content_index: int
    audio_end_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseCreate(_Event):
    response: ResponseOverrides = field(default_factory=ResponseOverrides)
    warnings: tuple[RealtimeWarning, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseCancel(_Event):
    response_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionAvatarConnect(_Event):
    client_sdp: str


@dataclass(frozen=True, slots=True, kw_only=True)
class InputAudioTurnStart(_Event):
    turn_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class InputAudioTurnAppend(_Event):
    turn_id: str
    audio: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class InputAudioTurnEnd(_Event):
    turn_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class InputAudioTurnCancel(_Event):
    turn_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class InputAudioClear(_Event):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class InputTextDelta(_Event):
    id: str
    """The user item the text belongs to."""
    delta: str
    content_index: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class InputTextDone(_Event):
    id: str
    content_index: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class McpApprovalResponse(_Event):
    approval_request_id: str
    approve: bool
    reason: str | None = None


ClientEvent = (
    SessionUpdate
    | TranscriptionSessionUpdate
    | InputAudioBufferAppend
    | InputAudioBufferCommit
    | InputAudioBufferClear
    | OutputAudioBufferClear
    | ConversationItemCreate
    | ConversationItemRetrieve
    | ConversationItemDelete
    | ConversationItemTruncate
    | ResponseCreate
    | ResponseCancel
    | SessionAvatarConnect
    | InputAudioTurnStart
    | InputAudioTurnAppend
    | InputAudioTurnEnd
    | InputAudioTurnCancel
    | InputAudioClear
    | InputTextDelta
    | InputTextDone
    | McpApprovalResponse
)

_COMMON_TYPES = (
    "session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "output_audio_buffer.clear",
    "conversation.item.create",
    "conversation.item.retrieve",
    "conversation.item.delete",
    "conversation.item.truncate",
    "response.create",
    "response.cancel",
)
_AZURE_TYPES = (
    "transcription_session.update",
    "session.avatar.connect",
    "input_audio.turn.start",
    "input_audio.turn.append",
    "input_audio.turn.end",
    "input_audio.turn.cancel",
    "input_audio.clear",
    "input_text.delta",
    "input_text.done",
    "mcp_approval_response",
)
CLIENT_EVENT_TYPES: dict[Dialect, tuple[str, ...]] = {
    Dialect.AZURE: (*_COMMON_TYPES, *_AZURE_TYPES),
    Dialect.BETA: (*_COMMON_TYPES, "transcription_session.update"),
    Dialect.GA: _COMMON_TYPES,
}


def parse_client_event(text: str | bytes, dialect: Dialect, *, input_format: AudioFormat = PCM16_24K) -> ClientEvent:
    """The typed event in one text frame. Raises `RealtimeError` (with the event's `event_id`) for any bad input."""
    obj = _decode(text)
    raw_id = obj.get("event_id")
    event_id = raw_id if isinstance(raw_id, str) and raw_id else None
    try:
        if raw_id is not None and not isinstance(raw_id, str):
            raise j.type_error("event_id", "a string", raw_id)
        kind = j.as_str(j.require(obj, "type", ""), "type")
        if kind not in CLIENT_EVENT_TYPES[dialect]:
            raise j.value_error("type", kind, CLIENT_EVENT_TYPES[dialect])
        return _PARSERS[kind](obj, dialect, input_format, event_id)
    except RealtimeError as exc:
        raise exc.with_event_id(event_id) from None


def _decode(text: str | bytes) -> JsonObject:
    if len(text) > MAX_EVENT_BYTES:
        raise RealtimeError(f"The event is {len(text)} bytes; the limit is {MAX_EVENT_BYTES} bytes.", code=INVALID_JSON)
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise RealtimeError(f"The event is not valid JSON: {exc}", code=INVALID_JSON) from None
    if not isinstance(obj, dict):
        raise RealtimeError(f"The event must be a JSON object, not {j.describe(obj)}.", code=INVALID_JSON)
    return obj


def _id(obj: JsonObject, key: str) -> str:
    return j.as_str(j.require(obj, key, ""), key)


def _index(obj: JsonObject, key: str, *, required: bool) -> Any:
    if not required and obj.get(key) is None:
        return None
    return j.as_int(j.require(obj, key, ""), key, minimum=0)


def _audio(obj: JsonObject, fmt: AudioFormat) -> bytes:
    return check_audio(decode_b64_audio(j.require(obj, "audio", ""), "audio"), fmt)


def _session(obj: JsonObject, dialect: Dialect, fmt: AudioFormat, event_id: str | None) -> ClientEvent:
    patch, warnings = parse_session(j.require(obj, "session", ""), dialect)
    return SessionUpdate(event_id=event_id, patch=patch, warnings=tuple(warnings))


def _transcription_session(obj: JsonObject, dialect: Dialect, fmt: AudioFormat, event_id: str | None) -> ClientEvent:
    # Its fields are the flat session's, so the flat session parser reads it; `type` makes it transcription-only.
    patch, warnings = parse_session(j.require(obj, "session", ""), dialect)
    fields = {**patch.fields, "type": "transcription"}
    return TranscriptionSessionUpdate(event_id=event_id, patch=SessionPatch(fields), warnings=tuple(warnings))


def _item_create(obj: JsonObject, dialect: Dialect, fmt: AudioFormat, event_id: str | None) -> ClientEvent:
    item = parse_item(j.require(obj, "item", ""), dialect, "item")
    assert not isinstance(item, ItemReference)  # parse_item admits references only when asked
    if isinstance(item, MessageItem) and item.role == "user":
        for i, part in enumerate(item.content):
            if part.audio is not None:
                check_audio(part.audio, fmt, f"item.content[{i}].audio")
    previous = obj.get("previous_item_id")
    return ConversationItemCreate(
        event_id=event_id,
        item=item,
        previous_item_id=None if previous is None else j.as_str(previous, "previous_item_id"),
    )


def _truncate(obj: JsonObject, dialect: Dialect, fmt: AudioFormat, event_id: str | None) -> ClientEvent:
    return ConversationItemTruncate(
        event_id=event_id,
        item_id=_id(obj, "item_id"),
        content_index=_index(obj, "content_index", required=True),
        audio_end_ms=_index(obj, "audio_end_ms", required=True),
    )


def _response_create(obj: JsonObject, dialect: Dialect, fmt: AudioFormat, event_id: str | None) -> ClientEvent:
    overrides, warnings = parse_response_create(obj, dialect)
    return ResponseCreate(event_id=event_id, response=overrides, warnings=tuple(warnings))


def _cancel(obj: JsonObject, dialect: Dialect, fmt: AudioFormat, event_id: str | None) -> ClientEvent:
    return ResponseCancel(event_id=event_id, response_id=j.opt_str(obj, "response_id", ""))


def _mcp_approval(obj: JsonObject, dialect: Dialect, fmt: AudioFormat, event_id: str | None) -> ClientEvent:
    return McpApprovalResponse(
        event_id=event_id,
        approval_request_id=_id(obj, "approval_request_id"),
        approve=j.as_bool(j.require(obj, "approve", ""), "approve"),
        reason=j.opt_str(obj, "reason", ""),
    )


_Parser = Callable[[JsonObject, Dialect, AudioFormat, str | None], ClientEvent]
_PARSERS: dict[str, _Parser] = {
    "session.update": _session,
    "transcription_session.update": _transcription_session,
    "input_audio_buffer.append": lambda o, d, f, e: InputAudioBufferAppend(event_id=e, audio=_audio(o, f)),
    "input_audio_buffer.commit": lambda o, d, f, e: InputAudioBufferCommit(event_id=e),
    "input_audio_buffer.clear": lambda o, d, f, e: InputAudioBufferClear(event_id=e),
    "output_audio_buffer.clear": lambda o, d, f, e: OutputAudioBufferClear(event_id=e),
    "conversation.item.create": _item_create,
    "conversation.item.retrieve": lambda o, d, f, e: ConversationItemRetrieve(event_id=e, item_id=_id(o, "item_id")),
    "conversation.item.delete": lambda o, d, f, e: ConversationItemDelete(event_id=e, item_id=_id(o, "item_id")),
    "conversation.item.truncate": _truncate,
    "response.create": _response_create,
    "response.cancel": _cancel,
    "session.avatar.connect": lambda o, d, f, e: SessionAvatarConnect(event_id=e, client_sdp=_id(o, "client_sdp")),
    "input_audio.turn.start": lambda o, d, f, e: InputAudioTurnStart(event_id=e, turn_id=_id(o, "turn_id")),
    "input_audio.turn.append": lambda o, d, f, e: InputAudioTurnAppend(
        event_id=e, turn_id=_id(o, "turn_id"), audio=_audio(o, f)
    ),
    "input_audio.turn.end": lambda o, d, f, e: InputAudioTurnEnd(event_id=e, turn_id=_id(o, "turn_id")),
    "input_audio.turn.cancel": lambda o, d, f, e: InputAudioTurnCancel(event_id=e, turn_id=_id(o, "turn_id")),
    "input_audio.clear": lambda o, d, f, e: InputAudioClear(event_id=e),
    "input_text.delta": lambda o, d, f, e: InputTextDelta(
        event_id=e, id=_id(o, "id"), delta=_id(o, "delta"), content_index=_index(o, "content_index", required=False)
    ),
    "input_text.done": lambda o, d, f, e: InputTextDone(
        event_id=e, id=_id(o, "id"), content_index=_index(o, "content_index", required=False)
    ),
    "mcp_approval_response": _mcp_approval,
}
