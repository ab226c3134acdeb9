"""One client connection of the Sora listener: protocol detection, HTTP/2 through `h2`, and HTTP/1.1 answers.

`_Connection` is the asyncio protocol `koe.net.h2listener.start_listener()` creates per connection; `H2Stream`
is the response side of one HTTP/2 stream, given to the route's handler as its `ResponseStream`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from koe.net._h2frames import DataFrame, FrameScanner
from koe.net._h2stream import H2Stream
from koe.net._http1 import SWITCHING_PROTOCOLS, Http1Error, Http1Exchange, Http1Request
from koe.net.h2types import Request, Response, Route, StreamHandler

log = logging.getLogger("koe.h2")

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
MAX_CONCURRENT_STREAMS = 250
INITIAL_WINDOW_BYTES = 1 << 20
MAX_FRAME_BYTES = 1 << 20
MAX_HEADER_LIST_BYTES = 1048896
"""The reference gateway's SETTINGS, so a Sora tuned against it sees the same limits."""
DEFAULT_WINDOW_BYTES = 65535
"""RFC 9113 §6.9.2: every window starts here until SETTINGS or WINDOW_UPDATE say otherwise."""
ACK_EVERY_BYTES = INITIAL_WINDOW_BYTES // 16
"""Fast-path DATA is credited back every 64 KiB, so a client never waits for credit (13 bytes per ~650 packets)."""
HTTP1_REQUEST_TIMEOUT_S = 30.0
"""An HTTP/1.1 client gets this long to send its whole (small) request."""
_INTERNAL_ERROR = Response(500, b'{"message":"Internal Server Error"}\n')


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
        self.streams: dict[int, H2Stream] = {}
        self.lost = False
        self.goaway = False
        self.peer = ""
        self._frames = FrameScanner(MAX_FRAME_BYTES)
        self._unacked = 0  # fast-path DATA bytes not yet credited back on the connection
        self._out = bytearray()  # frames built here, in order with h2's output
        self.max_frame_bytes = h2.settings.Settings().max_frame_size
        """The client's MAX_FRAME_SIZE (cached: `h2` computes it on every access)."""
        self.out_window = DEFAULT_WINDOW_BYTES
        """What the client still lets us send on the connection (DATA is framed here, not by `h2`)."""
        self._sniff = b""
        self._h1: Http1Exchange | None = None
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
                self._h1 = Http1Exchange()
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
        pieces, stop = self._frames.feed(data)
        if stop == "oversize":
            log.info("closing HTTP/2 connection from %s: a %d-byte frame exceeds MAX_FRAME_SIZE", self.peer,
                     self._frames.oversize_length)  # fmt: skip
            self.goaway = True
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.h2.close_connection(h2.errors.ErrorCodes.FRAME_SIZE_ERROR)
            self.loop_call(self._abort_all)
        elif stop == "goaway":
            # No new streams from now on; the ones in flight still get their whole response.
            self.goaway = True
            self.loop_call(self._close_if_idle)
        for piece in pieces:
            if isinstance(piece, DataFrame) and self._fast_data(piece):
                continue
            try:
                events = self.h2.receive_data(piece.raw if isinstance(piece, DataFrame) else piece)
            except h2.exceptions.ProtocolError as exc:
                log.info("closing HTTP/2 connection from %s: %s", self.peer, exc)
                self.flush()
                self._close()
                return
            for event in events:
                self._h2_event(event)
        self.flush()

    def _fast_data(self, frame: DataFrame) -> bool:
        """Hand a plain DATA frame of a stream being answered straight to its handler; False: `h2` takes it.

        `h2` never sees these frames, so the flow-control credit for them is given back here, in batches.
        """
        stream = self.streams.get(frame.stream_id)
        if stream is None or stream.handler is None or stream.remote_ended or stream.reset or stream.ended:
            return False
        size = len(frame.payload)
        stream.unacked += size
        self._unacked += size
        try:
            stream.handler.on_data(frame.payload)
        except Exception:  # as in _safely(), inlined on the per-packet path
            log.exception("stream handler failed")
        if stream.unacked >= ACK_EVERY_BYTES and not stream.remote_ended and not stream.reset:
            self.write_frame(_window_update(frame.stream_id, stream.unacked))
            stream.unacked = 0
        if self._unacked >= ACK_EVERY_BYTES:
            self.write_frame(_window_update(0, self._unacked))
            self._unacked = 0
        return True

    def write_frame(self, frame: bytes) -> None:
        """Queue a frame built outside `h2`, after whatever `h2` has queued so far (frames never interleave)."""
        self._out += self.h2.data_to_send()
        self._out += frame
        self.schedule_flush()

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
            delta = event.delta or 0
            if not event.stream_id:
                self.out_window += delta
                targets = list(self.streams.values())
            else:
                target = self.streams.get(event.stream_id)
                targets = [target] if target is not None else []
                for stream in targets:
                    stream.out_window += delta
            for stream in targets:
                stream.window_opened()
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            self.max_frame_bytes = self.h2.max_outbound_frame_size
            change = event.changed_settings.get(h2.settings.SettingCodes.INITIAL_WINDOW_SIZE)
            if change is not None and change.original_value is not None:
                for stream in self.streams.values():  # RFC 9113 §6.9.2: open streams shift by the difference
                    stream.out_window += change.new_value - change.original_value
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
        fields = [h for h in headers if not h[0].startswith(":")]
        if ":authority" in pseudo and not any(name == "host" for name, _ in fields):
            fields.append(("host", pseudo[":authority"]))  # as RFC 9113 §8.3.1 has it translated to HTTP/1.1
        request = Request(pseudo.get(":method", ""), path, fields, version)
        request.peer = self.peer
        stream = H2Stream(self, stream_id)
        self.streams[stream_id] = stream
        try:
            answer = self.route(request)
        except Exception:  # a bug in a route must cost one request, not the connection
            log.exception("route failed for %s %s", request.method, request.path)
            answer = _INTERNAL_ERROR
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
        if self.mode == "h2":
            self._out += self.h2.data_to_send()
        if self._out:
            self.transport.write(bytes(self._out))
            self._out.clear()

    def _close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    # --- HTTP/1.1 (the upgrade to h2c, health checks, and 400 for the audio paths) -------------------------

    def _h1_received(self, data: bytes) -> None:
        assert self._h1 is not None
        try:
            request = self._h1.feed(data)
        except Http1Error as exc:
            self._h1_reply(exc.response)
            return
        if request is None:
            return
        if self._h1_timer is not None:
            self._h1_timer.cancel()
        if request.upgrade_settings is not None:
            self._upgrade(request)
            return
        answer: Response | Callable[..., StreamHandler]
        try:
            answer = self.route(Request(request.method, request.path, request.headers, "1.1", self.peer))
        except Exception:
            log.exception("route failed for %s %s", request.method, request.path)
            answer = _INTERNAL_ERROR
        self._h1_reply(answer if isinstance(answer, Response) else self.http1_refusal)

    def _upgrade(self, request: Http1Request) -> None:
        assert self.transport is not None
        assert request.upgrade_settings is not None
        self.transport.write(SWITCHING_PROTOCOLS)
        self.mode = "h2"
        self.h2.initiate_upgrade_connection(request.upgrade_settings.encode("latin-1"))
        self.h2.increment_flow_control_window(INITIAL_WINDOW_BYTES - 65535)
        self._open(1, request.h2_headers(), "2")
        stream = self.streams.get(1)
        if stream is not None and stream.handler is not None and request.body:
            _safely(stream.handler.on_data, request.body)
        self._ended(1)
        self.flush()
        if request.rest:
            self._h2_received(request.rest)

    def _h1_reply(self, response: Response) -> None:
        assert self.transport is not None
        assert self._h1 is not None
        self.transport.write(self._h1.reply(response))
        self._close()


def _safely(callback: Callable[..., None], *args: bytes) -> None:
    try:
        callback(*args)
    except Exception:  # one stream's bug must not take the connection (and every other stream) down
        log.exception("stream handler failed")


def _window_update(stream_id: int, increment: int) -> bytes:
    return b"\x00\x00\x04\x08\x00" + stream_id.to_bytes(4, "big") + increment.to_bytes(4, "big")
