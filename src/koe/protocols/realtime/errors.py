"""The two things the Realtime codec reports about client input: `RealtimeError` (rendered as an `error` event) and
`RealtimeWarning` (rendered as an Azure `warning` event on the azure dialect, dropped elsewhere).

Every parse function of this package raises only `RealtimeError`, so a door can catch that one class and answer with
`ServerEvents.error(exc)` while keeping the socket open (spec §6, §11.9). Codes are the stable ones of spec §6.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ErrorType = Literal["invalid_request_error", "server_error"]

INVALID_REQUEST: ErrorType = "invalid_request_error"
SERVER_ERROR: ErrorType = "server_error"

# Codes for malformed client events (spec §6).
INVALID_JSON = "invalid_json"
"""Not JSON, or JSON that is not an object. The spec documents no code for this; `invalid_json` says what it is."""
INVALID_VALUE = "invalid_value"
"""A value of the wrong type or outside its allowed set, including an unknown event `type` (param `type`)."""
MISSING_REQUIRED_PARAMETER = "missing_required_parameter"
UNKNOWN_PARAMETER = "unknown_parameter"
"""Used for warnings: unknown fields are ignored, never an error (spec §11.8)."""
UNSUPPORTED_FEATURE = "unsupported_feature"
"""Used for warnings about settings koe accepts but does not act on (spec MUST 6, §11.10)."""

# Codes the door uses for state errors (spec §6); here so every door spells them the same.
INPUT_AUDIO_BUFFER_COMMIT_EMPTY = "input_audio_buffer_commit_empty"
CONVERSATION_ALREADY_HAS_ACTIVE_RESPONSE = "conversation_already_has_active_response"
RESPONSE_CANCEL_NOT_ACTIVE = "response_cancel_not_active"


class RealtimeError(Exception):
    """A client event that cannot be accepted. Render it with `ServerEvents.error()`; the socket stays open."""

    def __init__(
        self,
        message: str,
        *,
        code: str | None = INVALID_VALUE,
        param: str | None = None,
        event_id: str | None = None,
        error_type: ErrorType = INVALID_REQUEST,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param
        self.event_id = event_id
        self.type: ErrorType = error_type

    def with_event_id(self, event_id: str | None) -> RealtimeError:
        """The same error, attributed to the client event `event_id` (set once the id is known)."""
        self.event_id = event_id
        return self

    def __repr__(self) -> str:
        return f"RealtimeError({self.message!r}, code={self.code!r}, param={self.param!r}, event_id={self.event_id!r})"


@dataclass(frozen=True, slots=True)
class RealtimeWarning:
    """A setting that was accepted but ignored. Sent as `warning` on the azure dialect only (spec §11.10)."""

    message: str
    code: str | None = UNSUPPORTED_FEATURE
    param: str | None = None
