"""Sora's audio streaming rules for one channel, as a table-driven state machine (sans-I/O).

Make a `Channel(channel_id, settings)`, then drive it as Sora would: `create_session()` with the session webhook's
answer, `connect()` / `disconnect()` as clients come and go, and the APIs `start_audio_streaming()`,
`stop_audio_streaming()`, `subscribe()`, `unsubscribe()`, `terminate_session()`. Each call returns the `Action`s
Sora would take (open or close a gateway stream, send a webhook); the simulator carries them out. A refused API
call raises `SoraApiError`.

The rules come from Sora's documentation (spec, "Sora's side"): only sendrecv/sendonly connections with audio and a
language code are streamed; streaming is per session and starts from the session webhook's `audio_streaming: true`,
or from StartAudioStreaming, and stops on StopAudioStreaming (which resets push subscriptions to the default) or when
the session ends. With `audio_streaming_auto` it follows the subscriber count (0 → 1 starts, → 0 stops) and the
Start/Stop APIs are refused. `SESSION_START` is the documentation's combination table.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

Role = Literal["sendrecv", "sendonly", "recvonly"]
StartMode = Literal["on", "off", "auto"]

SESSION_START: dict[tuple[bool | None, bool | None], StartMode] = {
    # (audio_streaming, audio_streaming_auto) in the session webhook's answer → streaming at session start.
    (True, True): "auto",  # starts when the first subscriber appears, stops at zero
    (True, False): "on",
    (True, None): "on",
    (False, False): "off",  # until StartAudioStreaming
    (False, None): "off",
    (None, False): "off",
    (None, None): "off",
    # auto without audio_streaming is an invalid combination: both settings are ignored.
    (False, True): "off",
    (None, True): "off",
}


class SoraApiError(Exception):
    def __init__(self, error_type: str, message: str, error_code: int = 400) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.error_code = error_code
        self.message = message


@dataclass
class ChannelSettings:
    default_audio_streaming_result_push: bool = True
    default_audio_streaming_language_code: str | None = None


@dataclass
class Connection:
    connection_id: str
    client_id: str = ""
    role: Role = "sendrecv"
    audio: bool = True
    language_code: str | None = None
    subscribed: bool = True
    """Whether this connection receives result pushes."""


@dataclass(frozen=True)
class OpenStream:
    connection: Connection
    language_code: str


@dataclass(frozen=True)
class CloseStream:
    connection_id: str


@dataclass(frozen=True)
class Webhook:
    type: str
    data: dict[str, object]


Action = OpenStream | CloseStream | Webhook


@dataclass
class Channel:
    channel_id: str
    settings: ChannelSettings = field(default_factory=ChannelSettings)
    session_id: str | None = None
    mode: StartMode = "off"
    auto: bool = False
    streaming: bool = False
    started_at: float | None = None
    created_at: float = 0.0
    connections: dict[str, Connection] = field(default_factory=dict)
    streamed: set[str] = field(default_factory=set)
    max_connections: int = 0
    """The most connections the session has had at once (the webhooks' `max_connections`)."""
    total_connections: int = 0
    """Every connection the session has had (the webhooks' `total_connections`)."""

    # --- session lifecycle -----------------------------------------------------------------------------------

    def create_session(
        self, session_id: str, audio_streaming: bool | None = None, audio_streaming_auto: bool | None = None
    ) -> list[Action]:
        if self.session_id is not None:
            raise SoraApiError("SESSION-EXISTS", f"channel {self.channel_id} already has a session")
        self.session_id = session_id
        self.created_at = time.time()
        self.max_connections = self.total_connections = 0
        self.mode = SESSION_START[(audio_streaming, audio_streaming_auto)]
        self.auto = self.mode == "auto"
        return self._start() if self.mode == "on" else []

    def terminate_session(self) -> list[Action]:
        self._require_session()
        actions = self._stop(reset_push=False)
        self.connections.clear()
        self.session_id = None
        self.mode, self.auto = "off", False
        return actions

    def connect(
        self,
        connection_id: str,
        *,
        role: Role = "sendrecv",
        audio: bool = True,
        language_code: str | None = None,
        client_id: str = "",
    ) -> list[Action]:
        self._require_session()
        if connection_id in self.connections:
            raise SoraApiError("CONNECTION-EXISTS", f"connection {connection_id} is already in the channel")
        connection = Connection(
            connection_id, client_id, role, audio, language_code, self.settings.default_audio_streaming_result_push
        )
        self.connections[connection_id] = connection
        self.total_connections += 1
        self.max_connections = max(self.max_connections, len(self.connections))
        if self.auto and not self.streaming and self.subscriber_count() > 0:
            return self._start()
        if self.streaming:
            return self._open(connection)
        return []

    def disconnect(self, connection_id: str) -> list[Action]:
        self._connection(connection_id)
        actions: list[Action] = []
        if connection_id in self.streamed:
            self.streamed.discard(connection_id)
            actions.append(CloseStream(connection_id))
        del self.connections[connection_id]
        if self.auto and self.streaming and self.subscriber_count() == 0:
            actions += self._stop(reset_push=False)
        if not self.connections:  # the last client left: Sora destroys the session
            actions += self._stop(reset_push=False)
            self.session_id = None
            self.mode, self.auto = "off", False
        return actions

    # --- the audio streaming APIs ----------------------------------------------------------------------------

    def start_audio_streaming(self) -> list[Action]:
        self._require_session()
        if self.auto:
            raise SoraApiError("AUDIO-STREAMING-AUTO", "StartAudioStreaming is not available in auto mode")
        if self.streaming:
            raise SoraApiError("AUDIO-STREAMING-ALREADY-STARTED", f"channel {self.channel_id} is already streaming")
        return self._start()

    def stop_audio_streaming(self) -> list[Action]:
        self._require_session()
        if self.auto:
            raise SoraApiError("AUDIO-STREAMING-AUTO", "StopAudioStreaming is not available in auto mode")
        if not self.streaming:
            raise SoraApiError("AUDIO-STREAMING-NOT-STARTED", f"channel {self.channel_id} is not streaming")
        return self._stop(reset_push=True)

    def subscribe(self, connection_id: str) -> list[Action]:
        self._connection(connection_id).subscribed = True
        if self.auto and not self.streaming and self.subscriber_count() > 0:
            return self._start()
        return []

    def unsubscribe(self, connection_id: str) -> list[Action]:
        self._connection(connection_id).subscribed = False
        if self.auto and self.streaming and self.subscriber_count() == 0:
            return self._stop(reset_push=False)
        return []

    def push_states(self) -> list[dict[str, object]]:
        self._require_session()
        return [{"connection_id": c.connection_id, "subscribe": c.subscribed} for c in self.connections.values()]

    # --- queries -------------------------------------------------------------------------------------------

    def subscriber_count(self) -> int:
        return sum(1 for c in self.connections.values() if c.subscribed)

    def push_targets(self) -> list[str]:
        """Connections that receive results now: every subscriber, whatever its role, while streaming is on."""
        if not self.streaming:
            return []
        return [c.connection_id for c in self.connections.values() if c.subscribed]

    def language_for(self, connection: Connection) -> str | None:
        return connection.language_code or self.settings.default_audio_streaming_language_code

    def is_streamable(self, connection: Connection) -> bool:
        return connection.role in ("sendrecv", "sendonly") and connection.audio and bool(self.language_for(connection))

    # --- internals -----------------------------------------------------------------------------------------

    def _open(self, connection: Connection) -> list[Action]:
        language = self.language_for(connection)
        if not self.is_streamable(connection) or language is None or connection.connection_id in self.streamed:
            return []
        self.streamed.add(connection.connection_id)
        return [OpenStream(connection, language)]

    def _start(self) -> list[Action]:
        self.streaming = True
        self.started_at = time.time()
        actions: list[Action] = [
            Webhook("audio-streaming.started", {"audio_streaming_auto": self.auto, "started_at": self.started_at})
        ]
        for connection in self.connections.values():
            actions += self._open(connection)
        return actions

    def _stop(self, reset_push: bool) -> list[Action]:
        if not self.streaming:
            return []
        actions: list[Action] = [CloseStream(cid) for cid in sorted(self.streamed)]
        self.streamed.clear()
        self.streaming = False
        stopped: dict[str, object] = {
            "audio_streaming_auto": self.auto,
            "started_at": self.started_at,
            "stopped_at": time.time(),
        }
        actions.append(Webhook("audio-streaming.stopped", stopped))
        if reset_push:
            for connection in self.connections.values():
                connection.subscribed = self.settings.default_audio_streaming_result_push
        return actions

    def _require_session(self) -> None:
        if self.session_id is None:
            raise SoraApiError("SESSION-NOT-FOUND", f"channel {self.channel_id} has no session", 404)

    def _connection(self, connection_id: str) -> Connection:
        self._require_session()
        try:
            return self.connections[connection_id]
        except KeyError:
            raise SoraApiError("CONNECTION-NOT-FOUND", f"no connection {connection_id}", 404) from None
