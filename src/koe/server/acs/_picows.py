"""One ACS media connection on picows, as the door's `MediaSocket` (see `koe.server.acs.socket`).

picows calls `on_ws_frame()` for every frame as it is parsed. Once the call has started, the door takes each whole
message right there (`deliver_directly()`: parsed, checked and handed to the mode's pipeline, whose answer is sent
at once), so a 20 ms frame wakes no task. Any other message (before the call starts, one the door declines, or one
behind others still queued) goes into a deque and wakes the call's one task (`AcsDoor.serve()`, started when the
upgrade completes) through a future; the task drains every frame that has arrived before it waits again. Sends
write straight to picows.

Flow control, as the main port has it through Hypercorn's awaited sends: when the transport's write buffer passes
its high-water mark (picows's `pause_writing`), `send_now()` declines and `send_text()` waits, so outbound audio
queues in the door's `OutboundWriter`, which bounds it. Inbound, reading pauses while more than
`MAX_QUEUED_BYTES` wait for the call's task (it is busy starting the mode's pipeline, say), so a sender cannot grow
the queue without bound either.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Protocol, cast

from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport

from koe.config import ACSMode
from koe.protocols.acs import MAX_FRAME_BYTES
from koe.protocols.websocket import CloseCode, sendable
from koe.server.acs.door import AcsDoor

log = logging.getLogger("koe.server.acs.door")

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
"""Largest WebSocket frame picows accepts (bigger ones close the connection with 1009): Hypercorn's default
message limit, so both ports skip the same oversize frames as malformed (`koe.protocols.acs.MAX_FRAME_BYTES`)."""
MAX_QUEUED_BYTES = 1024 * 1024
"""Received frames waiting for the call's task beyond which reading pauses (about 20 s of 16 kHz mixed audio)."""
CLOSE_TIMEOUT_S = 5.0
"""After koe sends a close frame, how long the peer has to answer it before the connection is dropped."""
_TEXT = WSMsgType.TEXT
_DATA = (WSMsgType.TEXT, WSMsgType.BINARY)
_CONTINUATION = WSMsgType.CONTINUATION
_CLOSE = WSMsgType.CLOSE


class SocketOwner(Protocol):
    """What a connection needs of the listener that accepted it (`koe.server.acs.listener.AcsMediaListener`)."""

    door: AcsDoor
    sockets: set[PicowsMediaSocket]

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]: ...


class PicowsMediaSocket(WSListener):
    def __init__(
        self,
        listener: SocketOwner,
        path: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        client_host: str,
        mode: ACSMode,
        call_path: str,
    ) -> None:
        self.listener = listener
        self.path = path
        self.query = query
        self.headers = headers
        self.client_host = client_host
        self.mode = mode
        self.call_path = call_path
        self._loop = asyncio.get_running_loop()
        self._transport: WSTransport | None = None
        self._frames: deque[bytes] = deque()
        self._queued_bytes = 0
        self._reading_paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None
        self._fragments: list[bytes] | None = None
        self._fragment_bytes = 0
        self._closing = False
        self._gone = False
        self.lost = False
        self._close_timer: asyncio.TimerHandle | None = None
        self._direct: Callable[[str | bytes], bool] | None = None
        self._direct_context = contextvars.copy_context()

    # --- picows's callbacks ---------------------------------------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        self._transport = transport
        self.listener.sockets.add(self)
        self.listener.spawn(self._serve())

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind in _DATA and frame.fin and self._fragments is None:
            payload = frame.get_payload_as_bytes()
            direct = self._direct
            if direct is None or self._frames or not self._direct_context.run(direct, payload):
                self._queue(payload)
        elif kind in _DATA or kind == _CONTINUATION:
            self._fragment(frame)
        elif kind == _CLOSE:
            if not self._closing:
                payload = frame.get_payload_as_bytes()
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else CloseCode.NORMAL
                # Echo the peer's code (RFC 6455 §5.5.1), or 1000 for one that must not be sent.
                transport.send_close(_code(code if sendable(code) else CloseCode.NORMAL))
                self._closing = True
            transport.disconnect()
            self._gone = True
            self._wake()
        # PING is answered by picows itself; PONG needs nothing.

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.lost = not self._closing  # gone with no close frame either way: a reset or a dropped network
        self._gone = self._closing = True
        self.listener.sockets.discard(self)
        if self._close_timer is not None:
            self._close_timer.cancel()
        self._wake()
        self.resume_writing()

    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = self._loop.create_future()

    def resume_writing(self) -> None:
        writable, self._writable = self._writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)

    # --- the door's MediaSocket -----------------------------------------------------------------------------

    async def receive(self) -> str | bytes | None:
        frames = self._frames
        while not frames:
            if self._gone:
                return None
            self._waiter = self._loop.create_future()
            await self._waiter
        frame = frames.popleft()
        self._queued_bytes -= len(frame)
        if self._reading_paused and self._queued_bytes <= MAX_QUEUED_BYTES // 2 and self._transport is not None:
            self._reading_paused = False
            self._transport.underlying_transport.resume_reading()
        return frame

    def send_now(self, text: str) -> bool:
        if self._writable is not None or self._closing or self._transport is None:
            return False
        self._transport.send(_TEXT, text)
        return True

    async def send_text(self, text: str) -> None:
        while self._writable is not None:
            await self._writable
        if self._closing or self._transport is None:
            raise ConnectionResetError("the ACS media connection is closing")
        self._transport.send(_TEXT, text)

    def deliver_directly(self, handler: Callable[[str | bytes], bool] | None) -> None:
        # The handler runs in the context of the task that set it (the call's: its log fields, its tasks' context).
        self._direct, self._direct_context = handler, contextvars.copy_context()

    async def close(self, code: int, reason: str) -> None:
        transport = self._transport
        if transport is None or self._closing:
            return
        self._closing = True
        transport.send_close(_code(code), reason.encode())
        self._close_timer = self._loop.call_later(CLOSE_TIMEOUT_S, transport.disconnect)

    # --- the rest ---------------------------------------------------------------------------------------------

    def shut_down(self) -> None:
        """The server is stopping: close with 1001 and drop the connection."""
        if self._transport is not None:
            if not self._closing:
                self._closing = True
                self._transport.send_close(_code(CloseCode.GOING_AWAY), b"server shutting down")
            self._transport.disconnect()

    async def _serve(self) -> None:
        close = (CloseCode.NORMAL, "")
        try:
            await self.listener.door.serve(self, self.mode, self.call_path)
        except Exception:
            log.exception("ACS media connection failed")
            close = (CloseCode.INTERNAL_ERROR, "internal error")
        finally:
            if not self._gone:
                await self.close(*close)

    def _queue(self, payload: bytes) -> None:
        self._frames.append(payload)
        self._queued_bytes += len(payload)
        if self._queued_bytes > MAX_QUEUED_BYTES and not self._reading_paused and self._transport is not None:
            self._reading_paused = True
            self._transport.underlying_transport.pause_reading()
        self._wake()

    def _fragment(self, frame: WSFrame) -> None:
        """A message sent in several frames: keep up to just over `MAX_FRAME_BYTES` of it, which is enough for
        the door to skip it as too large, and queue it when its last frame comes."""
        if frame.msg_type != _CONTINUATION:
            self._fragments, self._fragment_bytes = [], 0
        if self._fragments is None:
            return  # a continuation with no message to continue; picows leaves that to the application
        if self._fragment_bytes <= MAX_FRAME_BYTES:
            payload = frame.get_payload_as_bytes()
            self._fragments.append(payload)
            self._fragment_bytes += len(payload)
        if frame.fin:
            message = b"".join(self._fragments)
            self._fragments = None
            self._queue(message)

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def _code(code: int) -> WSCloseCode:
    # picows sends any integer code (its Cython enum parameter takes ints), while its stubs name only the
    # registered ones; WSCloseCode(code) would refuse an application code such as 4000.
    return cast(WSCloseCode, code)
