"""Hypercorn tells an ASGI app that a WebSocket closed cleanly (1000) or was lost (1006), as the ASGI spec asks.

Hypercorn 0.18 reports 1006 for every WebSocket the peer ends, close frame or not: on the peer's close frame it
answers it and closes the stream, and the stream's close then finds the ASGI state still "connected" and calls it
abnormal. An app cannot then tell a client that said goodbye from a network drop, which the ACS door must (a lost
media stream is one ACS reconnects, `acs.reconnect_grace_s`). `report_clean_closes()`, called once before serving,
makes a stream whose WebSocket handshake has finished (wsproto no longer open) report 1000 instead; a drop still
reports 1006. The peer's own code is not kept: Hypercorn does not hold on to it.

The same call makes koe's own close frames arrive. Hypercorn closes the TCP connection as soon as the app has sent
its close frame. A peer that was still sending then has data in flight, and a socket closed with unread data answers
with a reset, which makes the peer's kernel drop what it had not yet read: the close frame with its code and reason
(the client saw 1006, not koe's 1008). So a connection that koe closes is first half-closed (its write side, after the
close frame), and read and discarded for up to `LINGER_S` until the peer closes its side too, as RFC 6455 (7.1.1)
expects a server to wait; the reading goes on in Hypercorn's own read loop, which ignores data after the close.

And a frame that wsproto cannot parse (a reserved opcode, an unmasked frame, invalid UTF-8 in a text message)
ends the connection with a close frame saying why (1002, 1007: RFC 6455 7.1.7), where Hypercorn closed the socket
without one: the failure is handed to Hypercorn as the peer's close, which it answers with the same code and reason
(the app is told of a clean close, 1000).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from koe.tasks import within

LINGER_S = 1.0
"""How long a connection koe closes waits for the peer's side of the close before it is closed anyway."""
_patched = False


def report_clean_closes() -> None:
    """Patch Hypercorn's WebSocket stream (once per process); see the module's docstring."""
    global _patched
    if _patched:
        return
    from hypercorn.protocol.events import StreamClosed
    from hypercorn.protocol.ws_stream import ASGIWebsocketState, WSStream
    from wsproto.connection import ConnectionState

    handle = WSStream.handle
    closing = {ConnectionState.REMOTE_CLOSING, ConnectionState.CLOSED}

    async def handle_with_clean_closes(self: Any, event: Any) -> None:
        if (
            isinstance(event, StreamClosed)
            and not self.closed
            and self.state == ASGIWebsocketState.CONNECTED
            and getattr(self, "connection", None) is not None
            and self.connection.state in closing
        ):
            self.state = ASGIWebsocketState.CLOSED  # a close frame came: Hypercorn reports 1000 for a closed state
        await handle(self, event)

    WSStream.handle = handle_with_clean_closes  # type: ignore[method-assign]
    _fail_with_a_close_frame()
    _linger_on_close()
    _patched = True


def _fail_with_a_close_frame() -> None:
    from wsproto.connection import Connection, ConnectionState
    from wsproto.events import CloseConnection

    events = Connection.events

    def events_failing_cleanly(self: Any) -> Any:
        for event in events(self):
            # wsproto reports a frame it could not parse as the peer's close while the connection is still open,
            # and Hypercorn answers a peer's close only in REMOTE_CLOSING: in that state it sends the close frame
            # back with wsproto's code and reason (1002, 1007), then ends the stream.
            if isinstance(event, CloseConnection) and self._state is ConnectionState.OPEN:
                self._state = ConnectionState.REMOTE_CLOSING
            yield event

    Connection.events = events_failing_cleanly  # type: ignore[method-assign]


def _linger_on_close() -> None:
    from hypercorn.asyncio.tcp_server import TCPServer

    read_data, close = TCPServer._read_data, TCPServer._close

    async def read_data_noting_its_end(self: Any) -> None:
        self._koe_reading = asyncio.current_task()
        self._koe_read_all = asyncio.Event()
        try:
            await read_data(self)  # until the peer's EOF (or a read error, or the idle timeout)
        finally:
            self._koe_read_all.set()

    async def close_after_the_peer(self: Any) -> None:
        reading = getattr(self, "_koe_reading", None)
        if reading not in (None, asyncio.current_task()) and not getattr(self, "_koe_lingered", False):
            self._koe_lingered = True
            with contextlib.suppress(NotImplementedError, OSError, RuntimeError):  # TLS cannot half-close
                self.writer.write_eof()
            with contextlib.suppress(TimeoutError):
                await within(self._koe_read_all.wait(), LINGER_S)
        await close(self)

    TCPServer._read_data = read_data_noting_its_end  # type: ignore[method-assign]
    TCPServer._close = close_after_the_peer  # type: ignore[method-assign]
