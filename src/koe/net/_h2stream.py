"""The response side of one HTTP/2 stream of the Sora listener: the `ResponseStream` a route's handler writes to.

`send()` queues one DATA frame and lets out as much as the peer's flow-control window allows (a large frame may go
in parts); `finish()` ends the stream once everything queued is out.
"""

from __future__ import annotations

import contextlib
from typing import Protocol

import h2.connection
import h2.errors
import h2.exceptions

from koe.net.h2types import StreamHandler


class StreamOwner(Protocol):
    """What a stream needs of its connection (`koe.net._h2connection._Connection` is the one implementation)."""

    h2: h2.connection.H2Connection
    lost: bool
    out_window: int
    """What the client still lets the whole connection send (DATA is framed here, not by `h2`)."""
    max_frame_bytes: int

    def write_frame(self, frame: bytes) -> None: ...

    def schedule_flush(self) -> None: ...

    def forget(self, stream_id: int) -> None: ...


class H2Stream:
    """The response side of one HTTP/2 stream; buffers what flow control does not let out yet."""

    def __init__(self, conn: StreamOwner, stream_id: int) -> None:
        self._conn = conn
        self.stream_id = stream_id
        self._id_bytes = stream_id.to_bytes(4, "big")
        self.handler: StreamHandler | None = None
        self.started = False
        self.ended = False  # our END_STREAM is queued or sent
        self.remote_ended = False
        self.reset = False
        self._end_sent = False
        self._pending: list[bytes] = []
        self.unacked = 0
        """Fast-path request bytes not yet credited back to the client (see `_Connection._fast_data`)."""
        self.out_window = conn.h2.remote_settings.initial_window_size
        """What the client still lets us send on this stream: DATA is framed here, not by `h2`."""

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
        conn = self._conn
        size = len(data)
        if not self._pending and size <= self.out_window and size <= conn.out_window and size <= conn.max_frame_bytes:
            # The usual case, one small result with room in every window: straight out as one DATA frame.
            conn.write_frame(size.to_bytes(3, "big") + b"\x00\x00" + self._id_bytes + data)
            self.out_window -= size
            conn.out_window -= size
            return
        self._pending.append(data)
        if len(self._pending) == 1:
            self.window_opened()

    def window_opened(self) -> None:
        """Send what flow control now allows, oldest first; a large frame may go out in parts.

        DATA frames are built here rather than by `h2` (which costs several times more per frame); the stream and
        connection windows are tracked from `h2`'s WindowUpdated and RemoteSettingsChanged events.
        """
        conn = self._conn
        while self._pending and not self.reset and not conn.lost:
            data = self._pending[0]
            size = min(self.out_window, conn.out_window, conn.max_frame_bytes)
            if size <= 0:
                return
            chunk = data if len(data) <= size else data[:size]
            conn.write_frame(len(chunk).to_bytes(3, "big") + b"\x00\x00" + self._id_bytes + chunk)
            self.out_window -= len(chunk)
            conn.out_window -= len(chunk)
            if len(chunk) == len(data):
                self._pending.pop(0)
            else:
                self._pending[0] = data[len(chunk) :]
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
