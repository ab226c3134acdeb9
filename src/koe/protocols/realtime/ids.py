"""Fresh identifiers in the shapes OpenAI and Azure use: `event_…`, `item_…`, `resp_…`, `call_…`, `conv_…`, `sess_…`.

Only the prefix matters to clients; the rest is random so ids never repeat across sessions.
"""

from __future__ import annotations

import secrets

_RANDOM_BYTES = 10
"""20 hex characters after the prefix, like `event_5c1d0f3a9b7e4c2d8a10` in the spec."""


def _new(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(_RANDOM_BYTES)}"


def new_event_id() -> str:
    return _new("event")


def new_item_id() -> str:
    return _new("item")


def new_response_id() -> str:
    return _new("resp")


def new_call_id() -> str:
    return _new("call")


def new_conversation_id() -> str:
    return _new("conv")


def new_session_id() -> str:
    return _new("sess")
