"""What the ACS door needs of one media WebSocket, so one door serves both the main port and its own listener.

`MediaSocket` is the whole contract: the upgrade request's path, query parameters, headers and client host, then
`receive()` (a text or binary frame, or None once the peer is gone), `lost` (the peer went without a close frame),
`send_text()`, `send_now()` (a send that
cannot wait, for the writer's fast path; False when it would have to), `close(code, reason)`, and
`deliver_directly(handler)`: a socket that parses frames in a callback of its own (picows) hands each frame to
`handler` as it arrives, and queues it for `receive()` only when the handler returns False (or frames are already
queued, which keeps them in order); a socket that cannot (Starlette's) ignores it.
`StarletteMediaSocket` adapts a Starlette `WebSocket` (the door on the main port, under Hypercorn); the picows one
lives with its listener (`koe.server.acs.listener`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from koe.protocols.websocket import CloseCode


class MediaSocket(Protocol):
    @property
    def path(self) -> str:
        """The request path, percent-decoded, without the query."""
        ...

    @property
    def query(self) -> Mapping[str, str]: ...

    @property
    def headers(self) -> Mapping[str, str]:
        """Case-insensitive; the first value of a repeated header."""
        ...

    @property
    def client_host(self) -> str: ...

    async def receive(self) -> str | bytes | None:
        """The next frame (text or binary), or None when the peer has gone."""
        ...

    @property
    def lost(self) -> bool:
        """True once the peer has gone without a close frame (a reset or a dropped network: 1006), which is when
        ACS reconnects; False while the socket is open, or after a close handshake."""
        ...

    async def send_text(self, text: str) -> None:
        """Send one text frame, waiting while the socket is backed up. Raises once the socket is gone."""
        ...

    def send_now(self, text: str) -> bool:
        """Send one text frame at once if that needs no waiting; False (nothing sent) otherwise."""
        ...

    async def close(self, code: int, reason: str) -> None:
        """Close with a code and reason, if the socket is still open."""
        ...

    def deliver_directly(self, handler: Callable[[str | bytes], bool] | None) -> None:
        """From now on, offer each arriving frame to `handler` first (None: stop); see the module's docstring."""
        ...


class StarletteMediaSocket:
    """The door on the main port: a Starlette WebSocket (Hypercorn underneath). Every send is awaited."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self.path = websocket.url.path
        self.query: Mapping[str, str] = websocket.query_params
        self.headers: Mapping[str, str] = websocket.headers
        self.client_host = websocket.client.host if websocket.client else ""
        self.lost = False

    async def receive(self) -> str | bytes | None:
        try:
            message = await self.websocket.receive()
        except WebSocketDisconnect as exc:
            self.lost = exc.code == CloseCode.ABNORMAL
            return None
        if message["type"] == "websocket.disconnect":
            # Hypercorn reports a connection that ended without a close frame as 1006.
            self.lost = message.get("code") == CloseCode.ABNORMAL
            return None
        text: str | None = message.get("text")
        if text is not None:
            return text
        data: bytes = message.get("bytes") or b""
        return data

    async def send_text(self, text: str) -> None:
        await self.websocket.send_text(text)

    def send_now(self, text: str) -> bool:
        return False  # ASGI sends are coroutines: the writer's task makes them

    def deliver_directly(self, handler: Callable[[str | bytes], bool] | None) -> None:
        return None  # an ASGI app receives by awaiting: every frame goes through receive()

    async def close(self, code: int, reason: str) -> None:
        if self.websocket.application_state == WebSocketState.CONNECTED:
            await self.websocket.close(code, reason)
