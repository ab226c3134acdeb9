"""Hypercorn tells an ASGI app that a WebSocket closed cleanly (1000) or was lost (1006), as the ASGI spec asks.

Hypercorn 0.18 reports 1006 for every WebSocket the peer ends, close frame or not: on the peer's close frame it
answers it and closes the stream, and the stream's close then finds the ASGI state still "connected" and calls it
abnormal. An app cannot then tell a client that said goodbye from a network drop, which the ACS door must (a lost
media stream is one ACS reconnects, `acs.reconnect_grace_s`). `report_clean_closes()`, called once before serving,
makes a stream whose WebSocket handshake has finished (wsproto no longer open) report 1000 instead; a drop still
reports 1006. The peer's own code is not kept: Hypercorn does not hold on to it.
"""

from __future__ import annotations

from typing import Any

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
    _patched = True
