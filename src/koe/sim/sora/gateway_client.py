"""Sora's side of the wire: an HTTP/2 client that streams connections' audio to any Suzu-compatible gateway.

`await GatewayConnection.connect(url, tls=…)` opens one HTTP/2 connection (h2c with prior knowledge for `http://`,
h2 over TLS with ALPN for `https://`, with a client certificate for mTLS). `await conn.open_stream(path, headers)`
starts one POST per Sora connection; every stream shares the connection. `await stream.send(data)` sends one DATA
frame (waiting for flow control), `await stream.end()` sends END_STREAM and `await stream.cancel()` RST_STREAM
(CANCEL). The gateway's answer arrives as `stream.status`, `stream.results` (an asyncio queue of parsed JSON values,
then `None` at the end) and the raw `stream.body`; `await stream.closed()` waits for the end.

Results are read as concatenated JSON values, so the reference gateway's missing final newlines and duplicated
error objects are tolerated (spec §2.7, §2.8).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions

from koe.protocols.sora_results import ResultStreamError, ResultStreamReader
from koe.tasks import stop, within

READ_BYTES = 65536


@dataclass
class TLSOptions:
    """Sora's `audio_streaming_tls_*` settings: the CA that signed the gateway, and a client certificate for mTLS."""

    verify_cacert_file: str | None = None
    fullchain_file: str | None = None
    privkey_file: str | None = None
    server_hostname: str | None = None

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.verify_cacert_file)
        context.set_alpn_protocols(["h2"])
        if self.fullchain_file:
            context.load_cert_chain(self.fullchain_file, self.privkey_file)
        return context


@dataclass
class GatewayStream:
    conn: GatewayConnection
    stream_id: int
    status: int | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    data_frames: list[bytes] = field(default_factory=list)
    results: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    received: list[tuple[float, Any]] = field(default_factory=list)
    """(perf_counter time, value) of every parsed result, in order."""
    reset_code: int | None = None
    error: str | None = None
    """Why the stream ended abnormally (reset, connection lost, unparsable body)."""
    _reader: ResultStreamReader = field(default_factory=ResultStreamReader)
    _response: asyncio.Event = field(default_factory=asyncio.Event)
    _done: asyncio.Event = field(default_factory=asyncio.Event)
    _window: asyncio.Event = field(default_factory=asyncio.Event)
    local_ended: bool = False

    @property
    def done(self) -> bool:
        return self._done.is_set()

    async def response(self) -> int | None:
        """Wait for the response HEADERS (or the end of the stream); the status code."""
        await asyncio.wait(
            {asyncio.ensure_future(self._response.wait()), asyncio.ensure_future(self._done.wait())},
            return_when=asyncio.FIRST_COMPLETED,
        )
        return self.status

    async def send(self, data: bytes, end: bool = False) -> bool:
        """One DATA frame. False when the stream is already over (the gateway ended or reset it)."""
        conn = self.conn
        while not self.done and not self.local_ended:
            try:
                window = conn.h2.local_flow_control_window(self.stream_id)
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                return False
            if window >= len(data) and len(data) <= conn.h2.max_outbound_frame_size:
                try:
                    conn.h2.send_data(self.stream_id, data, end_stream=end)
                except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                    return False
                self.local_ended = end
                await conn.flush()
                return True
            self._window.clear()
            await self._window.wait()
        return False

    async def end(self) -> None:
        if self.local_ended or self.done:
            return
        with contextlib.suppress(h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            self.conn.h2.end_stream(self.stream_id)
            self.local_ended = True
            await self.conn.flush()

    async def cancel(self) -> None:
        if self.done:
            return
        with contextlib.suppress(h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            self.conn.h2.reset_stream(self.stream_id, h2.errors.ErrorCodes.CANCEL)
            await self.conn.flush()
        self._finish("cancelled by the client")

    async def closed(self, limit_s: float | None = None) -> None:
        """Wait for the end of the response (at most `limit_s`: then `TimeoutError`)."""
        await within(self._done.wait(), limit_s)

    def text_results(self) -> list[Any]:
        return [value for _, value in self.received]

    def _data(self, data: bytes) -> None:
        self.data_frames.append(data)
        self.body += data
        try:
            values = self._reader.feed(data)
        except ResultStreamError as exc:
            self.error = str(exc)
            return
        now = time.perf_counter()
        for value in values:
            self.received.append((now, value))
            self.results.put_nowait(value)

    def _finish(self, error: str | None = None) -> None:
        if self.done:
            return
        if error and not self.error:
            self.error = error
        if not error:
            try:
                self._reader.end()
            except ResultStreamError as exc:
                self.error = str(exc)
        self._done.set()
        self._response.set()
        self._window.set()
        self.results.put_nowait(None)


class GatewayConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, authority: str, scheme: str) -> None:
        self.reader = reader
        self.writer = writer
        self.authority = authority
        self.scheme = scheme
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.streams: dict[int, GatewayStream] = {}
        self.closed = False
        self._task: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()

    @classmethod
    async def connect(cls, url: str, tls: TLSOptions | None = None, limit_s: float = 10.0) -> GatewayConnection:
        parts = urlsplit(url)
        secure = parts.scheme == "https"
        host = parts.hostname or "127.0.0.1"
        port = parts.port or (443 if secure else 80)
        context = (tls or TLSOptions()).context() if secure else None
        server_hostname = (tls.server_hostname if tls else None) or host if secure else None
        reader, writer = await within(
            asyncio.open_connection(host, port, ssl=context, server_hostname=server_hostname, limit=READ_BYTES * 4),
            limit_s,
        )
        if secure:
            ssl_object = writer.get_extra_info("ssl_object")
            if ssl_object is None or ssl_object.selected_alpn_protocol() != "h2":
                writer.close()
                raise ConnectionError(f"{url}: the server did not negotiate h2 by ALPN")
        conn = cls(reader, writer, f"{host}:{port}", "https" if secure else "http")
        conn.h2.initiate_connection()
        await conn.flush()
        conn._task = asyncio.get_running_loop().create_task(conn._read_loop())
        return conn

    async def open_stream(self, path: str, headers: list[tuple[str, str]], method: str = "POST") -> GatewayStream:
        stream_id = self.h2.get_next_available_stream_id()
        stream = GatewayStream(self, stream_id)
        self.streams[stream_id] = stream
        fields = [(":method", method), (":scheme", self.scheme), (":authority", self.authority), (":path", path)]
        self.h2.send_headers(stream_id, fields + headers, end_stream=method == "GET")
        stream.local_ended = method == "GET"
        await self.flush()
        return stream

    async def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and not self.closed:
            self.writer.write(data)
            with contextlib.suppress(ConnectionError):
                await self.writer.drain()

    async def close(self) -> None:
        if not self.closed:
            with contextlib.suppress(Exception):
                self.h2.close_connection()
                await self.flush()
        await self.abort()

    async def abort(self) -> None:
        """Drop the TCP connection without a goodbye (a Sora node that vanished)."""
        self.closed = True
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()
        if self._task is not None:
            await stop(self._task, ignore_failure=True)
        for stream in self.streams.values():
            stream._finish("connection closed")

    async def _read_loop(self) -> None:
        try:
            while True:
                data = await self.reader.read(READ_BYTES)
                if not data:
                    break
                try:
                    events = self.h2.receive_data(data)
                except h2.exceptions.ProtocolError as exc:
                    for stream in self.streams.values():
                        stream._finish(f"HTTP/2 protocol error: {exc}")
                    break
                for event in events:
                    self._event(event)
                await self.flush()
        except (ConnectionError, OSError) as exc:
            for stream in self.streams.values():
                stream._finish(f"connection lost: {exc}")
        finally:
            self.closed = True
            for stream in self.streams.values():
                stream._finish("connection closed by the gateway")

    def _event(self, event: h2.events.Event) -> None:
        stream = self.streams.get(getattr(event, "stream_id", 0) or 0)
        if isinstance(event, h2.events.ResponseReceived) and stream is not None:
            pairs = [(str(k), str(v)) for k, v in event.headers or []]
            stream.headers = [p for p in pairs if not p[0].startswith(":")]
            stream.status = int(dict(pairs).get(":status", "0"))
            stream._response.set()
        elif isinstance(event, h2.events.DataReceived):
            if event.flow_controlled_length and event.stream_id:
                with contextlib.suppress(h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                    self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            if stream is not None and event.data:
                stream._data(event.data)
        elif isinstance(event, h2.events.StreamEnded) and stream is not None:
            stream._finish()
        elif isinstance(event, h2.events.StreamReset) and stream is not None:
            stream.reset_code = int(event.error_code) if event.error_code is not None else None
            if not stream.done:
                # RST_STREAM(NO_ERROR) after END_STREAM is the gateway telling us to stop sending: not an error.
                stream._finish(None if event.error_code == h2.errors.ErrorCodes.NO_ERROR else "reset by the gateway")
        elif isinstance(event, h2.events.WindowUpdated):
            targets = self.streams.values() if not event.stream_id else [stream] if stream else []
            for target in targets:
                target._window.set()
        elif isinstance(event, h2.events.ConnectionTerminated):
            for target in self.streams.values():
                if not target.done:
                    target._finish(f"GOAWAY ({event.error_code})")
