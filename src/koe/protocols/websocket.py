"""WebSocket close codes (RFC 6455, section 7.4.1), named once for every door, listener and client of koe.

`CloseCode` holds the ones koe sends or reads; `sendable(code)` says whether a code may go out in a close frame
(1005, 1006 and 1015 only describe what happened locally and must never be sent).
"""

from __future__ import annotations

import enum


class CloseCode(enum.IntEnum):
    NORMAL = 1000
    GOING_AWAY = 1001
    """The server is stopping, or a session reached its lifetime (`session_expired`)."""
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    """ACS: a frame of a kind the stream cannot carry (binary, or audio before its metadata)."""
    NO_STATUS = 1005
    ABNORMAL = 1006
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    """Refused by a rule: a path that is not a koe endpoint, a broken protocol rule, a call that ended."""
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013
    TLS_HANDSHAKE = 1015


_NEVER_SENT = frozenset({CloseCode.NO_STATUS, CloseCode.ABNORMAL, CloseCode.TLS_HANDSHAKE, 1004})


def sendable(code: int) -> bool:
    """Whether `code` may be sent in a close frame: 1000-4999 except the reserved and local-only codes."""
    return 1000 <= code < 5000 and code not in _NEVER_SENT
