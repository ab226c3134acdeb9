"""Conversation items: the messages, function calls and function outputs a Realtime conversation holds.

One dialect-neutral model (`MessageItem`, `FunctionCallItem`, `FunctionCallOutputItem`, with `ContentPart`s) that the
door keeps in its conversation and renders anywhere. `parse_item()` reads a client's request item (the `item` of
`conversation.item.create`, or one entry of `response.create.response.input`); `render_item()` writes an item as the
dialect spells it: GA assistant content is `output_text` / `output_audio`, beta and Azure say `text` / `audio`, and
every item carries `object: "realtime.item"` (spec §2.1, §4.1).

Audio inside items is raw bytes in the session's format (input format for user audio, output format for assistant
audio); it is rendered as base64 only when asked for (`conversation.item.retrieved`).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, replace
from typing import Any, Literal

from koe.protocols.realtime import _json as j
from koe.protocols.realtime._json import Json
from koe.protocols.realtime.dialect import Dialect

Role = Literal["system", "user", "assistant"]
ItemStatus = Literal["completed", "incomplete", "in_progress"]
PartType = Literal["input_text", "input_audio", "input_image", "text", "audio"]
"""Neutral part types: the beta names. GA `output_text` / `output_audio` parse to `text` / `audio`."""

ITEM_OBJECT = "realtime.item"
ROOT = "root"
"""`previous_item_id: "root"` inserts an item at the start of the conversation."""
MAX_AUDIO_B64_CHARS = 15 * 1024 * 1024
"""Largest base64 audio in one client event (spec §4.1: 15 MiB)."""

_ROLE_PARTS: dict[str, tuple[str, ...]] = {
    "system": ("input_text",),
    "user": ("input_text", "input_audio", "input_image"),
    "assistant": ("text", "audio"),
}
_PART_ALIASES = {"output_text": "text", "output_audio": "audio"}
_STATUSES = ("completed", "incomplete", "in_progress")
_IMAGE_DETAIL = ("auto", "low", "high")


@dataclass(frozen=True, slots=True)
class ContentPart:
    type: PartType
    text: str | None = None
    audio: bytes | None = None
    transcript: str | None = None
    image_url: str | None = None
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class MessageItem:
    role: Role
    content: tuple[ContentPart, ...]
    id: str | None = None
    status: ItemStatus = "completed"


@dataclass(frozen=True, slots=True)
class FunctionCallItem:
    name: str
    arguments: str
    call_id: str | None = None
    id: str | None = None
    status: ItemStatus = "completed"


@dataclass(frozen=True, slots=True)
class FunctionCallOutputItem:
    call_id: str
    output: str
    id: str | None = None
    status: ItemStatus = "completed"


@dataclass(frozen=True, slots=True)
class ItemReference:
    """GA/beta `{"type": "item_reference", "id": ...}` in `response.create.response.input`."""

    id: str


ConversationItem = MessageItem | FunctionCallItem | FunctionCallOutputItem


def with_id(item: ConversationItem, item_id: str) -> ConversationItem:
    """`item` carrying `item_id` (the door assigns ids to items the client sent without one)."""
    return replace(item, id=item_id)


def decode_b64_audio(value: Json, param: str) -> bytes:
    text = j.as_str(value, param)
    if len(text) > MAX_AUDIO_B64_CHARS:
        raise j.value_error(param, f"<{len(text)} characters>", reason="Audio is limited to 15 MiB per event.")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise j.value_error(param, text[:32] + ("..." if len(text) > 32 else ""), reason="Expected base64.") from None


def parse_item(
    value: Json, dialect: Dialect, param: str, *, allow_reference: bool = False
) -> ConversationItem | ItemReference:
    """A client request item; raises `RealtimeError` naming the bad field (e.g. `item.content[0].type`)."""
    obj = j.as_object(value, param)
    kind = obj.get("type")
    if kind is None:
        if "role" not in obj:
            raise j.missing(j.join(param, "type"))
        kind = "message"
    kinds = ("message", "function_call", "function_call_output", *(("item_reference",) if allow_reference else ()))
    kind = j.as_choice(kind, j.join(param, "type"), kinds)
    item_id = j.opt_str(obj, "id", param)
    if kind == "item_reference":
        return ItemReference(j.as_str(j.require(obj, "id", param), j.join(param, "id")))
    status: ItemStatus = "completed"
    if obj.get("status") is not None:
        status = j.as_choice(obj["status"], j.join(param, "status"), _STATUSES)  # type: ignore[assignment]
    if kind == "function_call":
        return FunctionCallItem(
            name=j.as_str(j.require(obj, "name", param), j.join(param, "name")),
            arguments=j.opt_str(obj, "arguments", param) or "",
            call_id=j.opt_str(obj, "call_id", param),
            id=item_id,
            status=status,
        )
    if kind == "function_call_output":
        return FunctionCallOutputItem(
            call_id=j.as_str(j.require(obj, "call_id", param), j.join(param, "call_id")),
            output=j.as_str(j.require(obj, "output", param), j.join(param, "output")),
            id=item_id,
            status=status,
        )
    role = j.as_choice(j.require(obj, "role", param), j.join(param, "role"), tuple(_ROLE_PARTS))
    content = j.require(obj, "content", param)
    content_param = j.join(param, "content")
    if not isinstance(content, list):
        raise j.type_error(content_param, "an array", content)
    parts = tuple(_parse_part(part, role, dialect, j.join(content_param, i)) for i, part in enumerate(content))
    return MessageItem(role=role, content=parts, id=item_id, status=status)  # type: ignore[arg-type]


def _parse_part(value: Json, role: str, dialect: Dialect, param: str) -> ContentPart:
    obj = j.as_object(value, param)
    raw = j.as_str(j.require(obj, "type", param), j.join(param, "type"))
    kind = _PART_ALIASES.get(raw, raw)
    if role == "system" and kind == "text":
        kind = "input_text"  # some clients send a system prompt as plain text parts
    allowed = _ROLE_PARTS[role]
    if dialect is Dialect.BETA:
        allowed = tuple(a for a in allowed if a != "input_image")  # the beta API never had images
    if kind not in allowed:
        raise j.value_error(j.join(param, "type"), raw, allowed, reason=f"Not allowed in a {role} message.")
    if kind in ("input_text", "text"):
        return ContentPart(kind, text=j.as_str(j.require(obj, "text", param), j.join(param, "text")))  # type: ignore[arg-type]
    if kind == "input_image":
        detail = obj.get("detail")
        return ContentPart(
            "input_image",
            image_url=j.as_str(j.require(obj, "image_url", param), j.join(param, "image_url")),
            detail=None if detail is None else j.as_choice(detail, j.join(param, "detail"), _IMAGE_DETAIL),
        )
    audio = obj.get("audio")
    if kind == "input_audio" and audio is None:
        raise j.missing(j.join(param, "audio"))
    return ContentPart(
        kind,  # type: ignore[arg-type]
        audio=None if audio is None else decode_b64_audio(audio, j.join(param, "audio")),
        transcript=j.opt_str(obj, "transcript", param),
    )


def render_item(item: ConversationItem, dialect: Dialect, *, include_audio: bool = False) -> dict[str, Any]:
    """The item as a server event carries it. `include_audio` adds the audio bytes as base64 (for retrieve)."""
    out: dict[str, Any] = {} if item.id is None else {"id": item.id}
    out["object"] = ITEM_OBJECT
    if isinstance(item, MessageItem):
        out.update(type="message", status=item.status, role=item.role)
        out["content"] = [render_part(p, dialect, include_audio=include_audio) for p in item.content]
    elif isinstance(item, FunctionCallItem):
        out.update(type="function_call", status=item.status, name=item.name, arguments=item.arguments)
        if item.call_id is not None:
            out["call_id"] = item.call_id
    else:
        out.update(type="function_call_output", status=item.status, call_id=item.call_id, output=item.output)
    return out


def render_part(part: ContentPart, dialect: Dialect, *, include_audio: bool = False) -> dict[str, Any]:
    """A content part inside an item (GA renames assistant `text` / `audio` to `output_text` / `output_audio`)."""
    ga = dialect is Dialect.GA
    if part.type in ("input_text", "text"):
        kind = "output_text" if ga and part.type == "text" else part.type
        return {"type": kind, "text": part.text or ""}
    if part.type == "input_image":
        out: dict[str, Any] = {"type": "input_image", "image_url": part.image_url}
        if part.detail is not None:
            out["detail"] = part.detail
        return out
    out = {"type": "output_audio" if ga and part.type == "audio" else part.type, "transcript": part.transcript}
    if include_audio and part.audio is not None:
        out["audio"] = base64.b64encode(part.audio).decode("ascii")
    return out


def event_part(part: ContentPart) -> dict[str, Any]:
    """A part as `response.content_part.added/done` carry it: `text` / `audio` in every dialect (spec §2.1)."""
    if part.type == "audio":
        return {"type": "audio", "transcript": part.transcript or ""}
    return {"type": "text", "text": part.text or ""}
