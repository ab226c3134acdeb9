"""The ACS media door on a port of its own, on picows (a Cython WebSocket server): the same `AcsDoor` as on the
main port, at well under half the CPU per frame.

`listener = await AcsMediaListener.start(door, host, port, ssl=context)` (`koe serve` does it when `acs.media_port`
is set, with the main port's certificate when that serves TLS: `koe.server.tls`);
`listener.port` is the bound port (useful with 0); `await listener.close()` at shutdown.

Why: ACS streams 50 JSON frames a second per call. `koe bench acs` measured the door's server CPU per frame at about
150-190 µs under Hypercorn (about 100 streams per core), and 31.9 µs on this listener (500 streams per core at p99
2.1 ms), where a bare picows echo with no koe work costs 14.3 µs (docs/acs.md).

One connection:
1. `_Handshake`, a plain asyncio protocol, reads the upgrade request's head, matches its path (`AcsDoor.match`) and
   awaits `AcsDoor.refusal()`: the server's one access rule, as on the main port, JWKS fetch included. picows asks
   its request handler for an answer synchronously and does not tell it the client's address, so the handler alone
   could do neither.
2. It then hands the connection to picows with the answer decided: a `PicowsMediaSocket` (101), the door's 401/403
   JSON denial, or 404 for a path the door does not serve. picows checks the upgrade headers and replies.
3. The `PicowsMediaSocket` (`koe.server.acs._picows`) serves the call through `AcsDoor.serve()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl as ssl_module
from collections.abc import Coroutine
from typing import Any, cast
from urllib.parse import parse_qsl, unquote

import aiofastnet
from picows import WSAutoPingStrategy, WSUpgradeRequest, WSUpgradeResponse, WSUpgradeResponseWithListener

# picows's server protocol, built here because the connection reaches picows only after `_Handshake`; it is what
# `picows.ws_create_server` builds for each connection (not in picows's stubs, hence the ignore).
from picows.picows import WSProtocol  # type: ignore[attr-defined]

from koe.server.acs._picows import MAX_MESSAGE_BYTES, PicowsMediaSocket
from koe.server.acs.door import AcsDoor
from koe.server.auth import AccessRequest, Kind, Listener
from koe.tasks import TaskSet, within

log = logging.getLogger("koe.server.acs.door")

CLOSE_WAIT_S = 5.0
"""How long a stopping listener waits for its calls to end before it cancels them."""

HANDSHAKE_TIMEOUT_S = 5.0
"""The upgrade request's head must arrive within this long (picows's own default)."""
MAX_HEAD_BYTES = 16 * 1024
"""Longest request head read (picows's limit, and h11's under Hypercorn)."""
_READ_BUFFER_BYTES = 16 * 1024
_TLS_HANDSHAKE_RECORD = b"\x16"
"""The first byte of a TLS record carrying a handshake message (RFC 8446 §5.1): no HTTP request starts with it."""
_PICOWS_LOG = logging.getLogger("koe.server.acs.door.picows")
# picows logs every connection and disconnection at INFO; the door logs what matters.
_PICOWS_LOG.setLevel(logging.WARNING)

_Answer = PicowsMediaSocket | WSUpgradeResponseWithListener | None


class AcsMediaListener:
    def __init__(self, door: AcsDoor) -> None:
        self.door = door
        self.port = 0
        self.sockets: set[PicowsMediaSocket] = set()
        self.tls = False
        self._server: asyncio.Server | None = None
        self._tasks = TaskSet(log, "ACS media connection")

    @classmethod
    async def start(
        cls, door: AcsDoor, host: str, port: int, *, ssl: ssl_module.SSLContext | None = None, reuse_port: bool = False
    ) -> AcsMediaListener:
        """Listen on host:port; with `ssl`, every connection is TLS (`wss://`), else plain (`ws://`); `reuse_port`
        shares the port with other workers (`SO_REUSEPORT`)."""
        listener = cls(door)
        listener.tls = ssl is not None
        loop = asyncio.get_running_loop()
        listener._server = await aiofastnet.create_server(
            loop, lambda: _Handshake(listener), host, port, backlog=1024, ssl=ssl, reuse_port=reuse_port or None
        )
        listener.port = listener._server.sockets[0].getsockname()[1]
        return listener

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        return self._tasks.spawn(coro)

    async def close(self) -> None:
        """Stop listening, close every call with 1001 and wait (briefly) for the calls to end."""
        if self._server is not None:
            self._server.close()
        for socket in list(self.sockets):
            socket.shut_down()
        await self._tasks.wait(timeout_s=CLOSE_WAIT_S)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await within(self._server.wait_closed(), 1.0)


class _Handshake(asyncio.Protocol):
    """A connection until its upgrade request is answered; then picows's protocol takes the transport over."""

    def __init__(self, listener: AcsMediaListener) -> None:
        self.listener = listener
        self.head = bytearray()
        self.transport: asyncio.Transport | None = None
        self.admitting: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # aiofastnet's transports have asyncio.Transport's methods without deriving from it.
        self.transport = cast(asyncio.Transport, transport)
        self.timer = asyncio.get_running_loop().call_later(HANDSHAKE_TIMEOUT_S, self.transport.abort)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.head += data
        if self.admitting is not None:
            return  # arrived with the head, before reading paused: picows gets it too
        if not self.listener.tls and self.head[:1] == _TLS_HANDSHAKE_RECORD:
            # A TLS ClientHello on the plain port: close at once, so the client learns now (and a client that falls
            # back to ws://, as the ACS emulator does on loopback, need not wait for the handshake timeout).
            self.transport.close()
            return
        end = self.head.find(b"\r\n\r\n")
        if end < 0 and len(self.head) < MAX_HEAD_BYTES:
            return
        if not 0 <= end < MAX_HEAD_BYTES:
            self.transport.close()  # as picows does with an oversize head
            return
        if self.timer is not None:
            self.timer.cancel()
        self.transport.pause_reading()
        self.admitting = self.listener.spawn(self._admit(bytes(self.head[:end])))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.admitting is not None:
            self.admitting.cancel()

    async def _admit(self, head: bytes) -> None:
        transport = self.transport
        assert transport is not None
        try:
            answer = await self._answer(head)
        except Exception:
            log.exception("ACS media listener: cannot answer an upgrade request")
            transport.abort()
            return
        if transport.is_closing():
            return
        self.admitting = None  # the task is done with the transport; connection_lost now goes to picows
        protocol = _picows_protocol(answer)
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        data, offset = bytes(self.head), 0
        while offset < len(data) and not transport.is_closing():
            buffer = protocol.get_buffer(-1)
            size = min(len(buffer), len(data) - offset)
            buffer[:size] = data[offset : offset + size]
            protocol.buffer_updated(size)
            offset += size
        transport.resume_reading()

    async def _answer(self, head: bytes) -> _Answer:
        assert self.transport is not None
        target, fields = _parse_head(head)
        headers: dict[str, str] = {}
        for name, value in fields:
            headers.setdefault(name, value)
        raw_path, _, query = target.partition("?")
        path = unquote(raw_path)
        matched = self.listener.door.match(path)
        if matched is None:
            return None  # picows answers 404
        mode, call_path = matched
        peer = self.transport.get_extra_info("peername")
        client_host = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        # Starlette's query parameters: blank values kept, the last of a repeated name wins.
        pairs = parse_qsl(query, keep_blank_values=True)
        offered = [p.strip() for name, value in fields if name == "sec-websocket-protocol" for p in value.split(",")]
        request = AccessRequest(
            kind=Kind.ACS_MEDIA,
            headers=fields,
            query=pairs,
            subprotocols=[p for p in offered if p],
            client=client_host,
            listener=Listener.ACS_MEDIA,
            websocket=True,
        )
        refused = await self.listener.door.refusal(request)
        if refused is None:
            return PicowsMediaSocket(self.listener, path, dict(pairs), headers, client_host, mode, call_path)
        denial = WSUpgradeResponse.create_error_response(refused.status, refused.body(), refused.headers)
        return WSUpgradeResponseWithListener(denial, None)


def _parse_head(head: bytes) -> tuple[str, list[tuple[str, str]]]:
    """The request target and headers (names lowercased, each repeated one once per line), read leniently: picows
    parses the head again, strictly, and refuses what is not a valid upgrade request."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    target = parts[1] if len(parts) == 3 else ""
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon:
            headers.append((name.strip().lower(), value.strip()))
    return target, headers


def _picows_protocol(answer: _Answer) -> Any:
    """picows's server protocol for one connection, configured as `ws_create_server` would, whose request handler
    gives the answer already decided."""

    def handler(_request: WSUpgradeRequest) -> _Answer:
        return answer

    return WSProtocol(
        host_port=None,
        ws_path=None,
        is_client_side=False,
        ws_listener_factory=handler,
        logger=_PICOWS_LOG,
        disconnect_on_exception=True,
        websocket_handshake_timeout=HANDSHAKE_TIMEOUT_S,
        enable_auto_ping=False,
        auto_ping_idle_timeout=20.0,
        auto_ping_reply_timeout=20.0,
        auto_ping_strategy=WSAutoPingStrategy.PING_WHEN_IDLE,
        enable_auto_pong=True,
        max_frame_size=MAX_MESSAGE_BYTES,
        extra_headers=None,
        read_buffer_init_size=_READ_BUFFER_BYTES,
    )
