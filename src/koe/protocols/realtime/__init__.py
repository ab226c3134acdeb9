"""Sans-I/O codec of the Realtime API: Azure Voice Live (`azure`), OpenAI Realtime beta (`beta`) and GA (`ga`).

What a door does with it, in order:
1. On the upgrade request: `negotiate(path, query, headers, subprotocols)` → `Handshake` (dialect, subprotocol to
   select, model), or None for a path that is not a Realtime endpoint. (Keys are the server's: `koe.server.auth`.)
2. After the upgrade: `config = SessionConfig(model=...)`, `events = ServerEvents(dialect)`, and send
   `events.session_created(config, session_id=new_session_id(), expires_at=...)` as the first frame.
3. For each text frame: `parse_client_event(text, dialect, input_format=config.input_audio_format)` → one of the
   `ClientEvent` dataclasses, or `RealtimeError` → send `events.error(exc)`. For `SessionUpdate`:
   `config = apply_session_update(config, ev.patch)`, send `events.warning(w)` for each of `ev.warnings` (empty on
   the OpenAI dialects) and `events.session_updated(config, ...)`.
4. Render the engine's output with the `ServerEvents` builders (each returns a list of events) and
   `encode_event()`; audio goes through `formats.decode_audio/encode_audio` and `response_audio_delta` splits it.

The other side, koe as a client of a remote Realtime endpoint, is `koe.protocols.realtime.client`.
"""

from koe.protocols.realtime.client_events import (
    ClientEvent,
    ConversationItemCreate,
    ConversationItemDelete,
    ConversationItemRetrieve,
    ConversationItemTruncate,
    InputAudioBufferAppend,
    InputAudioBufferClear,
    InputAudioBufferCommit,
    InputAudioClear,
    InputAudioTurnAppend,
    InputAudioTurnCancel,
    InputAudioTurnEnd,
    InputAudioTurnStart,
    InputTextDelta,
    InputTextDone,
    McpApprovalResponse,
    OutputAudioBufferClear,
    ResponseCancel,
    ResponseCreate,
    SessionAvatarConnect,
    SessionUpdate,
    TranscriptionSessionUpdate,
    parse_client_event,
)
from koe.protocols.realtime.dialect import Dialect, Handshake, negotiate
from koe.protocols.realtime.errors import RealtimeError, RealtimeWarning
from koe.protocols.realtime.formats import AudioFormat, decode_audio, encode_audio, split_audio
from koe.protocols.realtime.ids import (
    new_call_id,
    new_conversation_id,
    new_event_id,
    new_item_id,
    new_response_id,
    new_session_id,
)
from koe.protocols.realtime.items import (
    ROOT,
    ContentPart,
    ConversationItem,
    FunctionCallItem,
    FunctionCallOutputItem,
    ItemReference,
    MessageItem,
    with_id,
)
from koe.protocols.realtime.responses import (
    Response,
    ResponseOverrides,
    StatusDetails,
    Usage,
    cancelled_details,
)
from koe.protocols.realtime.server_events import ContentRef, ServerEvents, encode_event
from koe.protocols.realtime.session import SessionConfig, SessionPatch, TurnDetection, Voice
from koe.protocols.realtime.session_update import apply_session_update

__all__ = [
    "ROOT",
    "AudioFormat",
    "ClientEvent",
    "ContentPart",
    "ContentRef",
    "ConversationItem",
    "ConversationItemCreate",
    "ConversationItemDelete",
    "ConversationItemRetrieve",
    "ConversationItemTruncate",
    "Dialect",
    "FunctionCallItem",
    "FunctionCallOutputItem",
    "Handshake",
    "InputAudioBufferAppend",
    "InputAudioBufferClear",
    "InputAudioBufferCommit",
    "InputAudioClear",
    "InputAudioTurnAppend",
    "InputAudioTurnCancel",
    "InputAudioTurnEnd",
    "InputAudioTurnStart",
    "InputTextDelta",
    "InputTextDone",
    "ItemReference",
    "McpApprovalResponse",
    "MessageItem",
    "OutputAudioBufferClear",
    "RealtimeError",
    "RealtimeWarning",
    "Response",
    "ResponseCancel",
    "ResponseCreate",
    "ResponseOverrides",
    "ServerEvents",
    "SessionAvatarConnect",
    "SessionConfig",
    "SessionPatch",
    "SessionUpdate",
    "StatusDetails",
    "TranscriptionSessionUpdate",
    "TurnDetection",
    "Usage",
    "Voice",
    "apply_session_update",
    "cancelled_details",
    "decode_audio",
    "encode_audio",
    "encode_event",
    "negotiate",
    "new_call_id",
    "new_conversation_id",
    "new_event_id",
    "new_item_id",
    "new_response_id",
    "new_session_id",
    "parse_client_event",
    "split_audio",
    "with_id",
]
