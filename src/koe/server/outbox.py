"""Sends that cannot pile up: one WebSocket connection's outbound frames, bounded in bytes and in time.

A client that stops reading must not hold koe's memory or a session for the rest of its lifetime. `Outbox(send,
limit_bytes=…, stall_s=…, door=…)` queues frames without waiting (`put()`), and its one task (`start()`) sends them
in order. It gives up when more than `limit_bytes` wait unsent, or when one send makes no progress for `stall_s`:
`stalled` then resolves with the reason, the queue is dropped, and the door closes the connection with
`STALL_CLOSE` (1008) and that reason. `close_after(code, reason)` sends a close once everything queued before it
has gone. `send_within()` is the same time bound for a door that sends directly.

What stays is the kernel's own socket buffer (bounded by the operating system) and the last frame handed to the
transport: an ASGI server gives the application no way to drop a connection that does not read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from koe.protocols.websocket import CloseCode
from koe.server.metrics import METRICS
from koe.tasks import stop, within

log = logging.getLogger("koe.server.outbox")

STALL_CLOSE = CloseCode.POLICY_VIOLATION
CLOSE_TIMEOUT_S = 2.0
"""How long a close frame may take to go out before koe stops waiting for it."""


class SendStalled(Exception):
    """A send made no progress within its time bound: the client is not reading."""


async def send_within(send: Awaitable[None], stall_s: float) -> None:
    """Await `send`; `SendStalled` if it has not completed after `stall_s`.

    The send keeps a task of its own, as it had under `asyncio.wait_for`. Run inline in the caller's task, the deaf
    client of tests/server/test_session_ends.py was never found stalled: its 54 MB were all written, each drain
    finding the transport's buffer empty. Why is not yet understood; the task keeps the behaviour that test proves."""
    try:
        await within(asyncio.ensure_future(send), stall_s)
    except TimeoutError as exc:
        raise SendStalled(f"send_stalled: the client read nothing for {stall_s:g} s (limits.send_stall_s)") from exc


class Outbox:
    def __init__(
        self,
        send: Callable[[str], Awaitable[None]],
        *,
        limit_bytes: int,
        stall_s: float,
        door: str,
        close: Callable[[int, str], Awaitable[None]] | None = None,
    ) -> None:
        self._send = send
        self._close = close
        self.limit_bytes = limit_bytes
        self.stall_s = stall_s
        self.door = door
        self._queue: deque[str | tuple[int, str]] = deque()
        self.queued_bytes = 0
        """Queued and in flight (the frame being sent is still koe's until the send returns)."""
        self._in_flight = 0
        self.peak_bytes = 0
        """The most ever waiting at once (what the limit bounds)."""
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.stalled: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        """Resolves with the reason once the outbox gives up on the client."""

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"{self.door}-outbox")

    def put(self, text: str) -> None:
        """Queue one text frame; never waits. Past `limit_bytes` unsent, the outbox gives up on the client."""
        if self.stalled.done():
            return
        size = len(text)
        self._queue.append(text)
        self._account(size)
        self._idle.clear()
        self._wake.set()
        if self.queued_bytes > self.limit_bytes:
            self._give_up(
                f"send_stalled: {self.queued_bytes} bytes wait for a client that does not read "
                "(limits.send_buffer_bytes)"
            )

    def close_after(self, code: int, reason: str) -> None:
        """Close the connection once everything queued so far has been sent."""
        if not self.stalled.done():
            self._queue.append((code, reason))
            self._idle.clear()
            self._wake.set()

    async def flush(self, timeout_s: float) -> None:
        """Wait (at most `timeout_s`) until everything queued has gone."""
        with contextlib.suppress(TimeoutError):
            await within(self._idle.wait(), timeout_s)

    async def aclose(self) -> None:
        """Stop sending and forget what is queued (the connection is over)."""
        self._closed = True  # the send loop also ends by itself, should a cancellation ever be lost
        self._drop()
        self._wake.set()
        if self._task is not None:
            await stop(self._task)

    def _account(self, delta: int) -> None:
        self.queued_bytes += delta
        self.peak_bytes = max(self.peak_bytes, self.queued_bytes)
        METRICS.outbound_bytes.labels(self.door).inc(delta)

    def _drop(self) -> None:
        self._account(-self.queued_bytes)
        self._in_flight = 0  # counted out with the rest: the send that returns later must not count it again
        self._queue.clear()
        self._idle.set()

    def _give_up(self, reason: str) -> None:
        if self.stalled.done():
            return
        log.warning("%s connection: %s", self.door, reason)
        METRICS.send_stalls.labels(self.door).inc()
        self._drop()
        self.stalled.set_result(reason)

    async def _run(self) -> None:
        try:
            while not self._closed:
                if not self._queue:
                    self._idle.set()
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                item = self._queue.popleft()
                if isinstance(item, tuple):
                    if self._close is not None:
                        with contextlib.suppress(Exception):
                            await within(self._close(*item), CLOSE_TIMEOUT_S)
                    continue
                self._in_flight = len(item)
                try:
                    await send_within(self._send(item), self.stall_s)
                except SendStalled as exc:
                    self._give_up(str(exc))  # counted until now, as it was still koe's to send
                    return
                self._account(-self._in_flight)
                self._in_flight = 0
        except Exception as exc:  # the socket went away; the door's receive loop notices and ends the session
            log.debug("%s outbox stopped: %s", self.door, exc)
            self._drop()
