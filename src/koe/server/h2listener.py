"""A small full-duplex HTTP/2 listener on asyncio and the `h2` library, for the Sora door (and its metrics port).

Call `start_listener(route, host, port, ssl=…)`. `route(request)` is called once per request, as soon as its
HEADERS arrive, and returns either a `Response` (sent at once, whole) or a factory that takes the request's
`ResponseStream` and returns a `StreamHandler`. The handler then gets every DATA frame as it arrives, one
`on_data()` call per frame with frame boundaries kept, while it writes its own DATA frames back through the
stream: the response goes out while the request body is still arriving.

One TCP (or TLS) connection speaks:
- h2c with prior knowledge (the client starts with the HTTP/2 preface);
- HTTP/1.1 with `Upgrade: h2c` (101, then HTTP/2; the upgrade request's body becomes stream 1's);
- h2 over TLS, chosen by ALPN, with optional client-certificate verification (mTLS) in the `ssl` context;
- plain HTTP/1.1 for anything else: `route()` sees `http_version="1.1"`, and a streaming answer to an HTTP/1.1
  request is refused with the `http1_refusal` response (the Sora door's 400).

Why not Hypercorn: it does stream both ways over HTTP/2, but ASGI does not promise one body message per DATA
frame (which raw framing needs), and each packet then costs an ASGI message, a queue hop and an extra task. Here a
packet costs one `h2` event and a synchronous call (see `koe bench sora` and the module docstring of
`koe.server.sora`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl as ssl_module
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import h11

log = logging.getLogger("koe.h2")

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_FRAME_HEADER_BYTES = 9
_GOAWAY = 0x7
MAX_CONCURRENT_STREAMS = 250
INITIAL_WINDOW_BYTES = 1 << 20
MAX_FRAME_BYTES = 1 << 20
MAX_HEADER_LIST_BYTES = 1048896
"""The reference gateway's SETTINGS, so a Sora tuned against it sees the same limits."""
MAX_HTTP1_BODY_BYTES = 1 << 20
"""An `Upgrade: h2c` request's body is read whole before switching; larger ones are refused."""
MAX_HTTP1_HEADER_BYTES = 64 * 1024
HTTP1_REQUEST_TIMEOUT_S = 30.0
"""An HTTP/1.1 client gets this long to send its whole (small) request."""


@dataclass
class Request:
    method: str
    path: str
    """Without the query string, which is ignored."""
    headers: list[tuple[str, str]]
    http_version: str
    """"2" or "1.1"."""
    peer: str = ""


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=lambda: [("content-type", "application/json")])


class StreamHandler(Protocol):
    def on_data(self, data: bytes) -> None:
        """One request DATA frame (never merged with the next)."""

    def on_end(self) -> None:
        """The request body ended (END_STREAM)."""

    def on_reset(self) -> None:
        """The client reset the stream or the connection dropped; the response can no longer be sent."""


class ResponseStream(Protocol):
    @property
    def closed(self) -> bool: ...

    def start(self, status: int = 200, headers: list[tuple[str, str]] | None = None) -> None: ...

    def send(self, data: bytes) -> None:
        """One DATA frame (or several if `data` exceeds the peer's frame size), flushed promptly."""

    def finish(self) -> None:
        """END_STREAM; if the request body is still coming, also ask the client to stop (RST_STREAM NO_ERROR)."""


Route = Callable[[Request], Response | Callable[[ResponseStream], StreamHandler]]


class _H2Stream:
    """The response side of one HTTP/2 stream; buffers what flow control does not let out yet."""

    def __init__(self, conn: _Connection, stream_id: int) -> None:
        self._conn = conn
        self.stream_id = stream_id
        self.handler: StreamHandler | None = None
        self.started = False
        self.ended = False  # our END_STREAM is queued or sent
        self.remote_ended = False
        self.reset = False
        self._end_sent = False
        self._pending: list[bytes] = []

    @property
    def closed(self) -> bool:
        return self.ended or self.reset or self._conn.lost

    def start(self, status: int = 200, headers: list[tuple[str, str]] | None = None) -> None:
        if self.started or self.closed:
            return
        self.started = True
        fields = [(":status", str(status)), *(headers or [("content-type", "application/json")])]
        self._conn.h2.send_headers(self.stream_id, fields)
        self._conn.schedule_flush()

    def send(self, data: bytes) -> None:
        if self.closed:
            return
        if not self.started:
            self.start()
        self._pending.append(data)
        if len(self._pending) == 1:
            self.window_opened()

    def window_opened(self) -> None:
        """Send what flow control now allows, oldest first; a large frame may go out in parts."""
        h2conn = self._conn.h2
        while self._pending and not self.reset and not self._conn.lost:
            try:
                window = h2conn.local_flow_control_window(self.stream_id)
            except h2.exceptions.StreamClosedError:
                self.reset = True
                return
            data = self._pending[0]
            if window <= 0 and data:
                return
            size = min(window, h2conn.max_outbound_frame_size)
            if len(data) <= size:
                h2conn.send_data(self.stream_id, data)
                self._pending.pop(0)
            else:
                h2conn.send_data(self.stream_id, data[:size])
                self._pending[0] = data[size:]
            self._conn.schedule_flush()
        if self.ended and not self._pending:
            self._end_now()

    def finish(self) -> None:
        if self.ended or self.reset or self._conn.lost:
            return
        if not self.started:
            self.start()
        self.ended = True
        if not self._pending:
            self._end_now()

    def _end_now(self) -> None:
        if self._end_sent:
            return
        self._end_sent = True
        h2conn = self._conn.h2
        with contextlib.suppress(h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            h2conn.end_stream(self.stream_id)
            if not self.remote_ended:
                h2conn.reset_stream(self.stream_id, h2.errors.ErrorCodes.NO_ERROR)
        self._conn.schedule_flush()
        self._conn.forget(self.stream_id)


class _Connection(asyncio.Protocol):
    def __init__(self, route: Route, http1_refusal: Response) -> None:
        self.route = route
        self.http1_refusal = http1_refusal
        self.transport: asyncio.Transport | None = None
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8", validate_inbound_headers=True)
        )
        self.h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: INITIAL_WINDOW_BYTES,
                h2.settings.SettingCodes.MAX_FRAME_SIZE: MAX_FRAME_BYTES,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST_BYTES,
            },
        )
        self.mode: str | None = None  # "h2" or "h1" once known
        self.streams: dict[int, _H2Stream] = {}
        self.lost = False
        self.goaway = False
        self.peer = ""
        self._scan_skip = len(PREFACE)  # the preface precedes the frames in every mode, upgrade included
        self._scan_header = b""
        self._sniff = b""
        self._h11: h11.Connection | None = None
        self._h1_request: h11.Request | None = None
        self._h1_body = bytearray()
        self._h1_timer: asyncio.TimerHandle | None = None
        self._flush_scheduled = False

    # --- asyncio.Protocol ---------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer or "")
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2":
            self._start_h2()

    def data_received(self, data: bytes) -> None:
        if self.mode == "h2":
            self._h2_received(data)
        elif self.mode == "h1":
            self._h1_received(data)
        else:
            self._sniff += data
            if self._sniff.startswith(PREFACE[: len(self._sniff)]) and len(self._sniff) < len(PREFACE):
                return  # could still be the preface
            data, self._sniff = self._sniff, b""
            if data.startswith(PREFACE):
                self._start_h2()
                self._h2_received(data)
            else:
                self.mode = "h1"
                self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HTTP1_HEADER_BYTES)
                if not data[:1].isupper():  # not an HTTP method: no point waiting for a request line
                    self._h1_reply(Response(400, b'{"message":"Bad Request"}\n'))
                    return
                self._h1_timer = asyncio.get_running_loop().call_later(HTTP1_REQUEST_TIMEOUT_S, self._close)
                self._h1_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self._h1_timer is not None:
            self._h1_timer.cancel()
        streams, self.streams = self.streams, {}
        for stream in streams.values():
            if stream.handler is not None and not stream.ended:
                _safely(stream.handler.on_reset)

    # --- HTTP/2 ---------------------------------------------------------------------------------------------

    def _start_h2(self) -> None:
        self.mode = "h2"
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(INITIAL_WINDOW_BYTES - 65535)
        self.flush()

    def _h2_received(self, data: bytes) -> None:
        if self.goaway:
            return  # nothing after a client's GOAWAY matters: its streams are answered, new ones are not allowed
        data = self._until_goaway(data)
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            log.info("closing HTTP/2 connection from %s: %s", self.peer, exc)
            self.flush()
            self._close()
            return
        for event in events:
            self._h2_event(event)
        self.flush()

    def _until_goaway(self, data: bytes) -> bytes:
        """The bytes before a client GOAWAY frame, which is held back from `h2`.

        `h2` closes its state machine on receiving GOAWAY, after which nothing can be sent; but a client may send
        END_STREAM then GOAWAY at once (the captured Sora stand-in does) and still expects its responses. So frame
        boundaries are tracked here, and a GOAWAY only sets `goaway`: the connection closes once its streams end.
        """
        pos = 0
        n = len(data)
        while pos < n:
            if self._scan_skip:
                step = min(self._scan_skip, n - pos)
                self._scan_skip -= step
                pos += step
                continue
            need = _FRAME_HEADER_BYTES - len(self._scan_header)
            self._scan_header += data[pos : pos + need]
            frame_start = pos - (len(self._scan_header) - min(need, n - pos))
            pos += min(need, n - pos)
            if len(self._scan_header) < _FRAME_HEADER_BYTES:
                break
            length = int.from_bytes(self._scan_header[:3], "big")
            kind = self._scan_header[3]
            self._scan_header = b""
            if length > MAX_FRAME_BYTES:
                # `h2` would buffer up to 16 MiB waiting for this frame; it is a FRAME_SIZE_ERROR right away.
                log.info("closing HTTP/2 connection from %s: a %d-byte frame exceeds MAX_FRAME_SIZE", self.peer, length)
                self.goaway = True
                with contextlib.suppress(h2.exceptions.ProtocolError):
                    self.h2.close_connection(h2.errors.ErrorCodes.FRAME_SIZE_ERROR)
                self.loop_call(self._abort_all)
                return data[: max(frame_start, 0)]
            if kind == _GOAWAY:
                self.goaway = True
                self.loop_call(self._close_if_idle)
                return data[: max(frame_start, 0)]
            self._scan_skip = length
        return data

    def _abort_all(self) -> None:
        self.flush()
        self._close()

    def loop_call(self, callback: Callable[[], None]) -> None:
        asyncio.get_running_loop().call_soon(callback)

    def _h2_event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            assert event.stream_id is not None
            assert event.headers is not None
            self._open(event.stream_id, [(str(k), str(v)) for k, v in event.headers], "2")
            if event.stream_ended is not None:
                self._ended(event.stream_id)
        elif isinstance(event, h2.events.DataReceived):
            assert event.stream_id is not None
            if event.flow_controlled_length:
                with contextlib.suppress(h2.exceptions.StreamClosedError):
                    self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            stream = self.streams.get(event.stream_id)
            if stream is not None and stream.handler is not None and not stream.closed:
                _safely(stream.handler.on_data, event.data or b"")
            if event.stream_ended is not None:
                self._ended(event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            assert event.stream_id is not None
            self._ended(event.stream_id)
        elif isinstance(event, h2.events.StreamReset):
            assert event.stream_id is not None
            stream = self.streams.pop(event.stream_id, None)
            if stream is not None:
                stream.reset = True
                if stream.handler is not None and not stream.ended:
                    _safely(stream.handler.on_reset)
            self._close_if_idle()
        elif isinstance(event, h2.events.WindowUpdated):
            targets = list(self.streams.values()) if not event.stream_id else [self.streams.get(event.stream_id)]
            for stream in targets:
                if stream is not None:
                    stream.window_opened()
        elif isinstance(event, h2.events.ConnectionTerminated):
            # A client's GOAWAY means no new streams; the ones in flight still get their whole response.
            self.goaway = True
            self._close_if_idle()

    def _ended(self, stream_id: int) -> None:
        stream = self.streams.get(stream_id)
        if stream is None or stream.remote_ended:
            return
        stream.remote_ended = True
        if stream.handler is not None and not stream.closed:
            _safely(stream.handler.on_end)
        if stream.ended and not stream._pending:
            self.forget(stream_id)

    def _open(self, stream_id: int, headers: list[tuple[str, str]], version: str) -> None:
        pseudo = {k: v for k, v in headers if k.startswith(":")}
        path = pseudo.get(":path", "/").split("?", 1)[0]
        request = Request(pseudo.get(":method", ""), path, [h for h in headers if not h[0].startswith(":")], version)
        request.peer = self.peer
        stream = _H2Stream(self, stream_id)
        self.streams[stream_id] = stream
        try:
            answer = self.route(request)
        except Exception:  # a bug in a route must cost one request, not the connection
            log.exception("route failed for %s %s", request.method, request.path)
            answer = Response(500, b'{"message":"Internal Server Error"}\n')
        if isinstance(answer, Response):
            stream.start(answer.status, [*answer.headers, ("content-length", str(len(answer.body)))])
            if answer.body:
                stream.send(answer.body)
            stream.finish()
            return
        stream.handler = answer(stream)

    def forget(self, stream_id: int) -> None:
        stream = self.streams.get(stream_id)
        if stream is not None and (stream.remote_ended or stream.reset) and stream.ended:
            del self.streams[stream_id]
        elif stream is not None and stream.ended:
            stream.handler = None  # the rest of the body is ignored
        self._close_if_idle()

    def _close_if_idle(self) -> None:
        if self.goaway and not any(not s.ended and not s.reset for s in self.streams.values()):
            self.flush()
            self._close()

    def schedule_flush(self) -> None:
        if not self._flush_scheduled and not self.lost:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        if self.transport is None or self.lost:
            return
        data = self.h2.data_to_send() if self.mode == "h2" else b""
        if data:
            self.transport.write(data)

    def _close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    # --- HTTP/1.1 (the upgrade to h2c, health checks, and 400 for the audio paths) -------------------------

    def _h1_received(self, data: bytes) -> None:
        assert self._h11 is not None
        try:
            self._h11.receive_data(data)
            while True:
                event = self._h11.next_event()
                if event is h11.NEED_DATA or event is h11.PAUSED:
                    if self._h11.their_state is h11.SEND_BODY and self._h1_body_size() > MAX_HTTP1_BODY_BYTES:
                        self._h1_reply(Response(413, b'{"message":"Request Entity Too Large"}\n'))
                    return
                if isinstance(event, h11.Request):
                    self._h1_request = event
                    self._h1_body = bytearray()
                elif isinstance(event, h11.Data):
                    self._h1_body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    self._h1_complete(self._h11.trailing_data[0])
                    return
                elif isinstance(event, h11.ConnectionClosed):
                    self._close()
                    return
        except h11.RemoteProtocolError as exc:
            self._h1_reply(Response(400, b'{"message":"Bad Request"}\n'), status_hint=exc.error_status_hint)

    def _h1_body_size(self) -> int:
        return len(self._h1_body)

    def _h1_complete(self, rest: bytes) -> None:
        event = self._h1_request
        assert event is not None
        headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in event.headers]
        values = dict(headers)
        upgrade = values.get("upgrade", "").lower() == "h2c" and "http2-settings" in values
        if upgrade:
            assert self.transport is not None
            self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
            self.mode = "h2"
            self.h2.initiate_upgrade_connection(values["http2-settings"].encode("latin-1"))
            self.h2.increment_flow_control_window(INITIAL_WINDOW_BYTES - 65535)
            skip = {"connection", "upgrade", "http2-settings", "host", "content-length", "transfer-encoding"}
            pseudo = [
                (":method", event.method.decode("latin-1")),
                (":path", event.target.decode("latin-1")),
                (":scheme", "http"),
                (":authority", values.get("host", "")),
            ]
            self._open(1, pseudo + [h for h in headers if h[0] not in skip], "2")
            stream = self.streams.get(1)
            if stream is not None and stream.handler is not None and self._h1_body:
                _safely(stream.handler.on_data, bytes(self._h1_body))
            self._ended(1)
            self.flush()
            if rest:
                self._h2_received(rest)
            return
        request = Request(
            event.method.decode("latin-1"), event.target.decode("latin-1").split("?", 1)[0], headers, "1.1"
        )
        request.peer = self.peer
        try:
            answer = self.route(request)
        except Exception:
            log.exception("route failed for %s %s", request.method, request.path)
            answer = Response(500, b'{"message":"Internal Server Error"}\n')
        self._h1_reply(answer if isinstance(answer, Response) else self.http1_refusal)

    def _h1_reply(self, response: Response, status_hint: int | None = None) -> None:
        assert self.transport is not None
        assert self._h11 is not None
        status = response.status if status_hint is None else status_hint
        headers = [(k, v) for k, v in response.headers] + [
            ("content-length", str(len(response.body))),
            ("connection", "close"),
        ]
        try:
            out = self._h11.send(h11.Response(status_code=status, headers=headers))
            out = (out or b"") + (self._h11.send(h11.Data(data=response.body)) or b"")
            out += self._h11.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError:  # h11 saw no request to answer (garbage from the first byte)
            out = _RAW_400
        self.transport.write(out)
        self._close()


_RAW_400 = (
    b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 26\r\n"
    b'connection: close\r\n\r\n{"message":"Bad Request"}\n'
)


def _safely(callback: Callable[..., None], *args: bytes) -> None:
    try:
        callback(*args)
    except Exception:  # one stream's bug must not take the connection (and every other stream) down
        log.exception("stream handler failed")


def tls_context(certfile: str, keyfile: str, verify_cacert_path: str | None = None) -> ssl_module.SSLContext:
    """Server TLS with ALPN h2 (and http/1.1 for health checks); a CA file or directory turns on mTLS."""
    import pathlib

    context = ssl_module.SSLContext(ssl_module.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl_module.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile, keyfile)
    context.set_alpn_protocols(["h2", "http/1.1"])
    if verify_cacert_path:
        path = pathlib.Path(verify_cacert_path)
        files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
        for file in files:
            context.load_verify_locations(cafile=str(file))
        context.verify_mode = ssl_module.CERT_REQUIRED
    return context


async def start_listener(
    route: Route,
    host: str,
    port: int,
    *,
    ssl: ssl_module.SSLContext | None = None,
    http1_refusal: Response | None = None,
) -> asyncio.Server:
    """Listen on host:port; returns the started `asyncio.Server` (its sockets tell the port when `port=0`)."""
    refusal = http1_refusal or Response(400, b'{"message":"Bad Request"}\n')
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: _Connection(route, refusal), host, port, ssl=ssl, backlog=1024)
