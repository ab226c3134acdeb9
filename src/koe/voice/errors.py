"""What the voice engine reports when a command cannot be carried out: one frozen class per failure, in koe's words.

The engine emits these inside `events.Error` (`Error.error`); the session goes on. They say what happened in
koe's own terms and carry the facts a door needs to answer in its own protocol, so no door's error codes or wording
live in the engine. Each door maps them once: the Realtime door onto OpenAI's codes and messages
(`koe.server.realtime.render.realtime_error`), the ACS door onto registry `error` events, which carry `kind`.

Match on the class (`match error: case CommitTooShort(): …`); `kind` is a stable name of koe's own, `message` a
sentence for people and `param`, where there is one, the command's field that was wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

ErrorKind = Literal[
    "commit_too_short",
    "response_in_progress",
    "no_response_to_cancel",
    "invalid_item",
    "limit_exceeded",
    "response_failed",
    "internal",
]
FailureReason = Literal["busy", "unavailable", "timeout", "context_length", "engine"]
"""Why an engine could not give a response: its queue was full, it is not there, it did not answer in time, the
conversation does not fit its context, or it failed on this request."""
Bound = Literal["item_chars", "items", "conversation_chars"]
"""The session bounds a client's item can meet (`koe.voice.config.Limits`)."""


@dataclass(frozen=True, slots=True)
class CommitTooShort:
    """A manual commit found less audio in the input buffer than a turn needs."""

    kind: ClassVar[ErrorKind] = "commit_too_short"
    param: ClassVar[str | None] = None
    buffered_ms: float
    minimum_ms: int

    @property
    def message(self) -> str:
        held, needed = f"{self.buffered_ms:.2f}", self.minimum_ms
        return f"the input buffer holds {held} ms of audio; a commit needs at least {needed} ms"


@dataclass(frozen=True, slots=True)
class ResponseInProgress:
    """A response was asked for while another one is still running (and the request did not ask to replace it)."""

    kind: ClassVar[ErrorKind] = "response_in_progress"
    param: ClassVar[str | None] = None
    response_id: str | None
    """The running response; None if it has not been created yet."""

    @property
    def message(self) -> str:
        return f"response {self.response_id or '(starting)'} is still in progress; wait for it to finish or cancel it"


@dataclass(frozen=True, slots=True)
class NoResponseToCancel:
    """A cancel arrived while no response was running."""

    kind: ClassVar[ErrorKind] = "no_response_to_cancel"
    param: ClassVar[str | None] = None

    @property
    def message(self) -> str:
        return "no response is in progress, so there is nothing to cancel"


@dataclass(frozen=True, slots=True)
class InvalidItem:
    """A conversation command named a missing item or an invalid position (`ConversationError`)."""

    kind: ClassVar[ErrorKind] = "invalid_item"
    message: str
    param: str | None
    """The command's field at fault: `item_id`, `previous_item_id`, `content_index`, …"""


@dataclass(frozen=True, slots=True)
class LimitExceeded:
    """A client's item was refused: it would take the conversation past one of the session's bounds."""

    kind: ClassVar[ErrorKind] = "limit_exceeded"
    bound: Bound
    limit: int
    actual: int
    """What the item (`item_chars`) or the conversation with it (`items`, `conversation_chars`) would hold."""

    @property
    def param(self) -> str | None:
        return "item.content" if self.bound == "item_chars" else None

    @property
    def message(self) -> str:
        if self.bound == "item_chars":
            return (
                f"the item's text is {self.actual} characters; an item may hold at most {self.limit} "
                "(limits.item_chars): split it"
            )
        if self.bound == "items":
            return (
                f"the conversation would hold {self.actual} items; a session keeps at most {self.limit} "
                "(limits.conversation_items): delete old items before adding more"
            )
        return (
            f"the conversation's text would be {self.actual} characters; a session keeps at most {self.limit} "
            "(limits.conversation_chars): delete old items before adding more"
        )


@dataclass(frozen=True, slots=True)
class ResponseFailed:
    """A response could not be generated (an engine was busy, gone, too slow or failed); its `ResponseDone` has
    status `failed`, and the session goes on."""

    kind: ClassVar[ErrorKind] = "response_failed"
    param: ClassVar[str | None] = None
    message: str
    reason: FailureReason
    response_id: str


@dataclass(frozen=True, slots=True)
class InternalError:
    """One of the session's own tasks failed unexpectedly (a bug, or a backend that broke its contract)."""

    kind: ClassVar[ErrorKind] = "internal"
    param: ClassVar[str | None] = None
    message: str


VoiceError = (
    CommitTooShort
    | ResponseInProgress
    | NoResponseToCancel
    | InvalidItem
    | LimitExceeded
    | ResponseFailed
    | InternalError
)
"""Everything `events.Error.error` can be."""
