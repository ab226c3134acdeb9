"""The conversation a session keeps: an ordered list of immutable items, and how it becomes LLM messages.

Items are frozen; an update replaces the item, so engine events can carry items without copying. Assistant audio
parts remember how long each spoken clause lasted, so `truncate()` can cut the transcript to what the listener
actually heard, and the model's context never contains speech nobody heard. Audio past the conversation's bound
(`max_audio_ms`) is dropped from the oldest items; what they said stays.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from koe.audio.pcm import Pcm
from koe.engines.base import ChatMessage, ToolCall

ItemType = Literal["message", "function_call", "function_call_output"]
ItemRole = Literal["user", "assistant", "system"]
ItemStatus = Literal["completed", "in_progress", "incomplete"]
PartType = Literal["input_text", "input_audio", "text", "audio"]
ID_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def new_id(prefix: str) -> str:
    """A fresh id in the Realtime style (`item_…`, `resp_…`, `call_…`)."""
    return f"{prefix}_" + "".join(secrets.choice(ID_ALPHABET) for _ in range(20))


@dataclass(frozen=True, slots=True)
class Part:
    type: PartType
    text: str = ""
    """For text parts: the text."""
    transcript: str | None = None
    """For audio parts: what was said (None until transcribed)."""
    audio: Pcm | None = None
    rate: int = 0
    clauses: tuple[tuple[str, float], ...] = ()
    """Assistant audio: (clause text, its audio length in ms), in order."""

    @property
    def audio_ms(self) -> float:
        return 0.0 if self.audio is None or not self.rate else self.audio.size * 1000.0 / self.rate

    @property
    def spoken_text(self) -> str:
        return self.text if self.type in ("input_text", "text") else (self.transcript or "")


@dataclass(frozen=True, slots=True)
class Item:
    id: str
    type: ItemType = "message"
    role: ItemRole | None = None
    content: tuple[Part, ...] = ()
    status: ItemStatus = "completed"
    call_id: str = ""
    name: str = ""
    arguments: str = ""
    output: str = ""
    participant: str | None = None

    @property
    def text(self) -> str:
        return " ".join(part.spoken_text for part in self.content if part.spoken_text).strip()


class ConversationError(ValueError):
    """A conversation operation names a missing item or an invalid position; `param` says which field."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


class Conversation:
    def __init__(self, max_audio_ms: float | None = None) -> None:
        """`max_audio_ms`: audio kept in all; beyond it the oldest items lose theirs (their transcripts stay)."""
        self._items: list[Item] = []
        self._max_audio_ms = max_audio_ms

    @property
    def chars(self) -> int:
        """The text the conversation holds, in characters (`item_chars` of every item)."""
        return sum(item_chars(item) for item in self._items)

    def _shed_audio(self) -> None:
        if self._max_audio_ms is None:
            return
        kept = sum(part.audio_ms for item in self._items for part in item.content)
        for index, item in enumerate(self._items):
            if kept <= self._max_audio_ms:
                return
            if item.status == "in_progress" or not any(part.audio is not None for part in item.content):
                continue
            kept -= sum(part.audio_ms for part in item.content)
            content = tuple(replace(part, audio=None) if part.audio is not None else part for part in item.content)
            self._items[index] = replace(item, content=content)

    @property
    def items(self) -> tuple[Item, ...]:
        return tuple(self._items)

    def last_id(self) -> str | None:
        return self._items[-1].id if self._items else None

    def get(self, item_id: str) -> Item:
        for item in self._items:
            if item.id == item_id:
                return item
        raise ConversationError(f"no conversation item with id {item_id!r}", "item_id")

    def add(self, item: Item, previous_item_id: str | None = None) -> str | None:
        """Insert `item` after `previous_item_id` ("root": at the start; None: at the end). Returns its predecessor."""
        if any(existing.id == item.id for existing in self._items):
            raise ConversationError(f"an item with id {item.id!r} already exists", "item.id")
        if previous_item_id is None:
            predecessor = self.last_id()
            self._items.append(item)
            self._shed_audio()
            return predecessor
        if previous_item_id == "root":
            self._items.insert(0, item)
            self._shed_audio()
            return None
        for index, existing in enumerate(self._items):
            if existing.id == previous_item_id:
                self._items.insert(index + 1, item)
                self._shed_audio()
                return previous_item_id
        raise ConversationError(f"previous_item_id {previous_item_id!r} is not in the conversation", "previous_item_id")

    def replace(self, item: Item) -> None:
        for index, existing in enumerate(self._items):
            if existing.id == item.id:
                self._items[index] = item
                self._shed_audio()
                return
        raise ConversationError(f"no conversation item with id {item.id!r}", "item_id")

    def delete(self, item_id: str) -> None:
        self._items.remove(self.get(item_id))

    def truncate(self, item_id: str, content_index: int, audio_end_ms: float) -> Item:
        """Cut an assistant audio part at `audio_end_ms`, dropping the audio and transcript past it."""
        item = self.get(item_id)
        if item.role != "assistant" or item.type != "message":
            raise ConversationError("only assistant messages can be truncated", "item_id")
        if not 0 <= content_index < len(item.content) or item.content[content_index].type != "audio":
            raise ConversationError(f"content_index {content_index} is not an audio part", "content_index")
        if audio_end_ms < 0:
            raise ConversationError("audio_end_ms must not be negative", "audio_end_ms")
        part = item.content[content_index]
        if audio_end_ms >= part.audio_ms:
            return item  # nothing unheard to drop
        cut = truncate_part(part, audio_end_ms)
        content = (*item.content[:content_index], cut, *item.content[content_index + 1 :])
        updated = replace(item, content=content, status="incomplete")
        self.replace(updated)
        return updated


def truncate_part(part: Part, audio_end_ms: float) -> Part:
    """`part` cut to its first `audio_end_ms`: whole clauses heard, plus the heard share of the current one's words."""
    kept: list[str] = []
    clauses: list[tuple[str, float]] = []
    elapsed = 0.0
    for text, duration in part.clauses:
        if elapsed + duration <= audio_end_ms:
            kept.append(text)
            clauses.append((text, duration))
        else:
            words = text.split()
            heard = int(len(words) * max(0.0, audio_end_ms - elapsed) / duration) if duration > 0 else 0
            if heard:
                kept.append(" ".join(words[:heard]))
                clauses.append((kept[-1], audio_end_ms - elapsed))
            break
        elapsed += duration
    samples = int(part.rate * audio_end_ms / 1000) if part.rate else 0
    audio = part.audio[:samples].copy() if part.audio is not None else None
    return replace(part, transcript=" ".join(kept), audio=audio, clauses=tuple(clauses))


def item_chars(item: Item) -> int:
    """The text an item holds: what it says, a call's arguments, a call's output."""
    return len(item.text) + len(item.arguments) + len(item.output)


def chat_messages(items: Sequence[Item], instructions: str) -> list[ChatMessage]:
    """The conversation as LLM messages: transcripts stand in for audio, tool traffic stays structured."""
    messages = [ChatMessage("system", instructions)] if instructions else []
    for item in items:
        if item.type == "function_call":
            call = ToolCall(item.call_id, item.name, item.arguments or "{}")
            messages.append(ChatMessage("assistant", "", tool_calls=(call,)))
        elif item.type == "function_call_output":
            messages.append(ChatMessage("tool", item.output, tool_call_id=item.call_id))
        elif item.role is not None and item.text:
            messages.append(ChatMessage(item.role, item.text))
    return messages


def audio_part(pcm: Pcm, rate: int, transcript: str | None = None) -> Part:
    return Part("input_audio", transcript=transcript, audio=np.asarray(pcm, dtype=np.int16), rate=rate)
