"""The Sora simulator: channels of simulated clients whose audio streams to a gateway, with pushes and webhooks.

Create `SoraSimulator(SimulatorOptions(gateway_url=…))`, then drive it as Sora's users would: `create_session()`
(with the session webhook's answer, or asking `session_webhook_url`), `connect()` clients (role, audio, language
code, an audio file), and call `start_audio_streaming()`, `stop_audio_streaming()`, `subscribe()`,
`unsubscribe()`, `list_push_states()`, `disconnect()`, `terminate_session()`. `await sim.close()` at the end.
`koe.sim.sora.api` serves the same calls over HTTP, named as Sora's APIs are.

Every streamed connection is one HTTP/2 POST on a single shared connection to the gateway, carrying Sora's headers
and the configured framing, paced at 20 ms per packet divided by `speed`. Every result the gateway sends is pushed,
as Sora does, to each subscribed connection of the channel as
`{"type":"push","data":{"type":"audio_streaming_result","connection_id":…,"result":…}}` (`sim.pushes`), and
recorded with what was sent (`sim.records`). Webhooks are POSTed to `event_webhook_url` and kept in `sim.webhooks`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import httpx

from koe.protocols.sora import Framing, SoraRequest, frame_packet, request_headers
from koe.sim.sora.channel import Action, Channel, ChannelSettings, CloseStream, OpenStream, Role, Webhook
from koe.sim.sora.gateway_client import GatewayConnection, GatewayStream, TLSOptions
from koe.sim.sora.source import opus_packets
from koe.tasks import within

log = logging.getLogger("koe.sim.sora")

PACKET_MS = 20
CLOSE_WAIT_S = 30.0
"""How long a stream that Sora ended may take to deliver its last results before it is reset."""
SORA_VERSION = "2025.1.0"
LABEL = "WebRTC SFU Sora"
OnSourceEnd = Literal["disconnect", "idle", "loop"]


@dataclass
class SimulatorOptions:
    gateway_url: str
    path: str = "/speech"
    framing: Framing = "header"
    tls: TLSOptions | None = None
    speed: float = 1.0
    """1.0 paces packets in real time (20 ms apart); 10.0 sends ten times faster."""
    event_webhook_url: str | None = None
    session_webhook_url: str | None = None
    channel: ChannelSettings = field(default_factory=ChannelSettings)
    on_source_end: OnSourceEnd = "disconnect"
    """When a client's audio file ends: leave the channel, stay connected and silent (no packets), or loop."""
    push_type: str = "audio_streaming_result"
    record_packets: bool = False
    """Keep every packet sent (send time, sequence, base64 payload) in the stream's record, e.g. to compare with
    what a gateway's `/dump` saw."""


@dataclass
class StreamRecord:
    """What went to the gateway for one streamed connection, and what came back."""

    channel_id: str
    connection_id: str
    language_code: str
    packets_sent: int = 0
    bytes_sent: int = 0
    status: int | None = None
    results: list[dict[str, Any]] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    """With `record_packets`: `{"t": unix s, "sequence": n, "payload": base64}` per packet."""
    error: str | None = None
    started_at: float = 0.0
    ended_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


@dataclass
class _Client:
    channel_id: str
    connection_id: str
    packets: list[bytes]
    task: asyncio.Task[None] | None = None
    stream: GatewayStream | None = None
    record: StreamRecord | None = None


class SoraSimulator:
    def __init__(self, options: SimulatorOptions) -> None:
        self.options = options
        self.channels: dict[str, Channel] = {}
        self.clients: dict[str, _Client] = {}
        self.records: list[StreamRecord] = []
        self.pushes: dict[str, list[dict[str, Any]]] = {}
        self.push_events: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self.webhooks: list[dict[str, Any]] = []
        self._conn: GatewayConnection | None = None
        self._conn_lock = asyncio.Lock()
        self._http = httpx.AsyncClient(timeout=10.0)
        self._tasks: set[asyncio.Task[None]] = set()

    # --- Sora's API ------------------------------------------------------------------------------------------

    async def create_session(
        self,
        channel_id: str,
        audio_streaming: bool | None = None,
        audio_streaming_auto: bool | None = None,
        session_id: str | None = None,
    ) -> str:
        channel = self.channels.setdefault(channel_id, Channel(channel_id, self.options.channel))
        session_id = session_id or _sora_id()
        if self.options.session_webhook_url:
            answer = await self._ask_session_webhook(channel_id, session_id)
            audio_streaming = answer.get("audio_streaming", audio_streaming)
            audio_streaming_auto = answer.get("audio_streaming_auto", audio_streaming_auto)
        actions = channel.create_session(session_id, audio_streaming, audio_streaming_auto)
        await self._apply(channel, actions)
        return session_id

    async def connect(
        self,
        channel_id: str,
        *,
        role: Role = "sendrecv",
        audio: bool = True,
        language_code: str | None = None,
        source: str | Path | None = None,
        connection_id: str | None = None,
        client_id: str = "",
    ) -> str:
        channel = self._channel(channel_id)
        connection_id = connection_id or _sora_id()
        packets = opus_packets(source) if source is not None else []
        self.clients[connection_id] = _Client(channel_id, connection_id, packets)
        self.pushes.setdefault(connection_id, [])
        actions = channel.connect(
            connection_id, role=role, audio=audio, language_code=language_code, client_id=client_id
        )
        await self._apply(channel, actions)
        return connection_id

    async def disconnect(self, channel_id: str, connection_id: str) -> None:
        channel = self._channel(channel_id)
        await self._apply(channel, channel.disconnect(connection_id))
        self.clients.pop(connection_id, None)

    async def start_audio_streaming(self, channel_id: str) -> None:
        channel = self._channel(channel_id)
        await self._apply(channel, channel.start_audio_streaming())

    async def stop_audio_streaming(self, channel_id: str) -> None:
        channel = self._channel(channel_id)
        await self._apply(channel, channel.stop_audio_streaming())

    async def subscribe(self, channel_id: str, connection_id: str) -> None:
        channel = self._channel(channel_id)
        await self._apply(channel, channel.subscribe(connection_id))

    async def unsubscribe(self, channel_id: str, connection_id: str) -> None:
        channel = self._channel(channel_id)
        await self._apply(channel, channel.unsubscribe(connection_id))

    def list_push_states(self, channel_id: str) -> list[dict[str, object]]:
        return self._channel(channel_id).push_states()

    async def terminate_session(self, channel_id: str) -> None:
        channel = self._channel(channel_id)
        await self._apply(channel, channel.terminate_session())

    # --- waiting and shutting down -----------------------------------------------------------------------------

    async def wait_idle(self, limit_s: float | None = None) -> None:
        """Wait until every client's audio has been sent and every stream has ended."""

        async def idle() -> None:
            while self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)

        await within(idle(), limit_s)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self._conn is not None:
            await self._conn.close()
        await self._http.aclose()

    # --- carrying out Sora's actions ---------------------------------------------------------------------------

    def _channel(self, channel_id: str) -> Channel:
        channel = self.channels.get(channel_id)
        if channel is None:
            from koe.sim.sora.channel import SoraApiError

            raise SoraApiError("CHANNEL-NOT-FOUND", f"no channel {channel_id}", 404)
        return channel

    async def _apply(self, channel: Channel, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, OpenStream):
                client = self.clients[action.connection.connection_id]
                task = asyncio.get_running_loop().create_task(self._stream(channel, client, action.language_code))
                client.task = task
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            elif isinstance(action, CloseStream):
                ended = self.clients.get(action.connection_id)
                if ended is not None and ended.task is not None and ended.task is not asyncio.current_task():
                    ended.task.cancel()  # the stream task ends the request with END_STREAM and drains the results
            elif isinstance(action, Webhook):
                await self._webhook(channel, action)

    async def _gateway(self) -> GatewayConnection:
        async with self._conn_lock:
            if self._conn is None or self._conn.closed:
                self._conn = await GatewayConnection.connect(self.options.gateway_url, tls=self.options.tls)
            return self._conn

    async def _stream(self, channel: Channel, client: _Client, language_code: str) -> None:
        record = StreamRecord(channel.channel_id, client.connection_id, language_code, started_at=time.time())
        self.records.append(record)
        client.record = record
        connection = channel.connections[client.connection_id]
        request = SoraRequest(
            channel.channel_id, channel.session_id or "", client.connection_id, language_code, connection.client_id
        )
        try:
            conn = await self._gateway()
            stream = await conn.open_stream(self.options.path, request_headers(request))
        except (OSError, ConnectionError) as exc:
            record.error = f"cannot reach the gateway: {exc}"
            record.ended_at = time.time()
            return
        client.stream = stream
        reader = asyncio.get_running_loop().create_task(self._read(channel, client, stream, record))
        leave = False
        try:
            leave = await self._send(client, stream, record)
        except asyncio.CancelledError:
            pass  # Sora stopped streaming this connection
        finally:
            await stream.end()
            try:
                await asyncio.shield(within(asyncio.shield(reader), CLOSE_WAIT_S))
            except (TimeoutError, asyncio.CancelledError):
                await stream.cancel()
                reader.cancel()
            record.status = stream.status
            record.error = record.error or stream.error
            record.ended_at = time.time()
        if leave and client.connection_id in channel.connections:
            await self._apply(channel, channel.disconnect(client.connection_id))

    async def _send(self, client: _Client, stream: GatewayStream, record: StreamRecord) -> bool:
        """Send the client's packets at the packet rate; True when the client then leaves the channel."""
        interval = PACKET_MS / 1000 / self.options.speed
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        sequence = 0
        while True:
            for packet in client.packets:
                if stream.done:
                    return False
                body = packet
                if self.options.framing == "header":
                    body = frame_packet(packet, time.time_ns() // 1000, sequence)
                if not await stream.send(body):
                    return False
                sequence += 1
                record.packets_sent += 1
                record.bytes_sent += len(packet)
                if self.options.record_packets:
                    entry = {"t": time.time(), "sequence": sequence - 1, "payload": base64.b64encode(packet).decode()}
                    record.sent.append(entry)
                next_at += interval
                delay = next_at - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            if self.options.on_source_end != "loop" or not client.packets:
                break
        if self.options.on_source_end == "idle":
            await asyncio.Event().wait()  # silent until Sora stops the stream (cancellation)
        return self.options.on_source_end == "disconnect"

    async def _read(self, channel: Channel, client: _Client, stream: GatewayStream, record: StreamRecord) -> None:
        while (result := await stream.results.get()) is not None:
            record.results.append(result)
            envelope = {
                "type": "push",
                "data": {"type": self.options.push_type, "connection_id": client.connection_id, "result": result},
            }
            for target in channel.push_targets():
                self.pushes.setdefault(target, []).append(envelope)
                self.push_events.put_nowait((target, envelope))

    async def _webhook(self, channel: Channel, action: Webhook) -> None:
        now = time.time()
        data: dict[str, Any] = {
            "audio_streaming_auto": action.data.get("audio_streaming_auto", False),
            "audio_streaming_started_timestamp": _timestamp(action.data.get("started_at")),
        }
        if "stopped_at" in action.data:
            data["audio_streaming_stopped_timestamp"] = _timestamp(action.data["stopped_at"])
        body = {
            "data": data,
            "id": _sora_id(),
            "label": LABEL,
            "timestamp": _timestamp(now),
            "type": action.type,
            "version": SORA_VERSION,
            "max_connections": channel.max_connections,
            "node_name": "sora@127.0.0.1",
            "session_id": channel.session_id,
            "channel_id": channel.channel_id,
            "multistream": True,
            "spotlight": False,
            "created_time": int(channel.created_at),
            "total_connections": channel.total_connections,
            "created_timestamp": _timestamp(channel.created_at),
        }
        self.webhooks.append(body)
        if self.options.event_webhook_url:
            try:
                await self._http.post(self.options.event_webhook_url, json=body)
            except httpx.HTTPError as exc:
                log.warning("sora-sim: webhook %s failed: %s", action.type, exc)

    async def _ask_session_webhook(self, channel_id: str, session_id: str) -> dict[str, Any]:
        assert self.options.session_webhook_url is not None
        body = {"type": "session.created", "channel_id": channel_id, "session_id": session_id, "label": LABEL,
                "version": SORA_VERSION, "timestamp": _timestamp(time.time()), "multistream": True}  # fmt: skip
        response = await self._http.post(self.options.session_webhook_url, json=body)
        response.raise_for_status()
        answer: dict[str, Any] = response.json() if response.content else {}
        return answer


def _sora_id() -> str:
    """26 characters of Crockford base32, the shape of Sora's ids."""
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    return "".join(secrets.choice(alphabet) for _ in range(26))


def _timestamp(seconds: object) -> str | None:
    if not isinstance(seconds, int | float):
        return None
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
