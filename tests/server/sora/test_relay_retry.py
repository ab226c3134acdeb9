"""The relay service's retries (spec §2.7, Suzu's `max_retry` and `retry_interval_ms`), without Suzu's defects
(§2.8 #1-3): a retried connect never crashes the request, audio that arrives meanwhile is kept, a silent reconnect
writes nothing, and once the retries are used up the stream ends the documented way.

The upstreams are real servers on loopback: koe's own Realtime door behind a TCP proxy that refuses a connect and
later resets the session's connection, a minimal Realtime server that drops every session, an HTTP server answering
429, and a closed port.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from koe.engines.registry import Engines
from koe.net.h2listener import Request, Response, start_listener
from koe.net.inprocess import free_port
from koe.protocols.sora import SoraRequest, frame_packet
from koe.server.app import create_app
from koe.sim.sora.gateway_client import GatewayStream
from koe.sim.sora.source import opus_packets
from tests.conftest import AUDIO
from tests.server.acs.support import serve_app
from tests.server.realtime.support import API_KEY, realtime_settings
from tests.server.sora.support import connect, fixture_packets, framed, post, running_gateway
from tests.server.sora.test_relay import _closed_port
from tests.wer import wer

ENGLISH = SoraRequest("sora", "S", "C", "en-US")
RETRY = {"max_retry": 3, "retry_interval_ms": 50, "audio_streaming_header": True}
MAX_WER = 0.2
WAIT_S = 60.0
FIRST_STAMP_US = 1_795_422_666_893_554


class FlakyProxy:
    """A TCP proxy to `upstream_port` that closes the first `refuse` connections at once, and resets every
    connection it carries when `cut()` is called (RST, as a crashed or restarted upstream would)."""

    def __init__(self, upstream_port: int, refuse: int) -> None:
        self.upstream_port = upstream_port
        self.refuse = refuse
        self.accepted = 0
        self.port = 0
        self._pipes: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()

    def cut(self) -> None:
        for writer in self._pipes:
            writer.transport.abort()
        self._pipes.clear()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.accepted <= self.refuse:
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self._pipes += [writer, up_writer]
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer), return_exceptions=True)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.transport.abort()


async def _send_paced(stream: GatewayStream, packets: list[bytes], first_index: int) -> int:
    """Send packets in header framing, numbered on from `first_index`, at four times real time; returns the next
    index."""
    for i, packet in enumerate(packets, first_index):
        await stream.send(frame_packet(packet, FIRST_STAMP_US + i * 20_000, i))
        if i % 4 == 3:
            await asyncio.sleep(0.02)
    return first_index + len(packets)


def _finals(stream: GatewayStream) -> list[dict[str, Any]]:
    return [r for r in stream.text_results() if r.get("is_final")]


async def _until(condition: Any, limit_s: float = WAIT_S) -> None:
    for _ in range(int(limit_s / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the condition did not come true in time")


@pytest.mark.models
@pytest.mark.timeout(180)
async def test_a_refused_connect_and_a_reset_session_are_retried_and_nothing_is_lost_or_written(
    engines: Engines, texts: dict[str, str]
) -> None:
    upstream_port = free_port()
    async with serve_app(create_app(realtime_settings(), engines), upstream_port):
        proxy = FlakyProxy(upstream_port, refuse=1)
        await proxy.start()
        relay = {
            "service": "relay",
            "relay_url": f"ws://127.0.0.1:{proxy.port}/v1/realtime?model=gpt-realtime",
            "relay_kind": "openai",
            "relay_api_key": API_KEY,
            **RETRY,
        }
        try:
            async with running_gateway(**relay) as gateway:
                conn = await connect(gateway)
                stream = await post(conn, "/speech", [], ENGLISH, end=False)
                short = opus_packets(AUDIO / "short_16k.wav", trailing_silence_ms=1500)
                index = await _send_paced(stream, short, 0)
                await _until(lambda: len(_finals(stream)) == 1)
                proxy.cut()  # the session's connection is reset: the relay reconnects at once, silently
                utterance = opus_packets(AUDIO / "utterance_16k.wav", trailing_silence_ms=1500)
                await _send_paced(stream, utterance, index)
                await stream.end()
                await stream.closed(WAIT_S)
                await conn.close()
        finally:
            await proxy.close()
    assert stream.status == 200
    results = stream.text_results()
    assert [r for r in results if r["type"] == "error"] == []  # a silent reconnect writes nothing
    first, *rest = _finals(stream)
    assert wer(texts["short"], first["message"]) <= MAX_WER
    assert wer(texts["utterance"], " ".join(r["message"] for r in rest)) <= MAX_WER
    # The second session's times go on along the Sora stream's timeline, not from 0 again.
    assert rest[0]["start_ms"] >= first["end_ms"]
    assert gateway.metrics.relay_retries == {(("phase", "connect"),): 1, (("phase", "stream"),): 1}
    assert proxy.accepted == 3  # refused, the first session, the one after the reset


async def _dropping_upstream(connection: ServerConnection) -> None:
    """A Realtime server that takes the session's update and a few appends, then drops the connection."""
    with contextlib.suppress(Exception):
        for _ in range(3):
            json.loads(await connection.recv())
        connection.transport.abort()


@contextlib.asynccontextmanager
async def _serving_dropper() -> AsyncIterator[int]:
    async with serve(_dropping_upstream, "127.0.0.1", 0) as server:
        yield next(iter(server.sockets)).getsockname()[1]


async def test_a_session_that_keeps_dropping_ends_with_one_error_line_once_the_retries_are_used() -> None:
    async with _serving_dropper() as port:
        relay = {"service": "relay", "relay_url": f"ws://127.0.0.1:{port}/v1/realtime", **RETRY}
        async with running_gateway(**relay) as gateway:
            conn = await connect(gateway)
            stream = await post(conn, "/speech", [], ENGLISH, end=False)
            packets = fixture_packets()
            for frame in framed(packets * 4):
                if stream.done:
                    break
                await stream.send(frame)
                await asyncio.sleep(0.002)
            await stream.closed(WAIT_S)
            await conn.close()
    assert stream.status == 200
    (error,) = stream.text_results()
    assert error["type"] == "error" and error["reason"].startswith("UPSTREAM-DISCONNECTED")
    assert bytes(stream.body).endswith(b"}\n")
    assert gateway.metrics.relay_retries == {(("phase", "stream"),): 3}
    assert gateway.metrics.stream_errors[(("kind", "relay"),)] == 1


@pytest.mark.parametrize("upstream", ["unreachable", "429", "403"])
async def test_a_connect_that_keeps_failing_is_retried_then_answered_with_its_status(upstream: str) -> None:
    """Suzu panics on this path (a nil reader closed on a connect-phase retry, §2.8 #1); koe retries as configured,
    keeps the audio meanwhile, then answers the connect's status with an empty body. A 403 is not retried."""
    server = None
    if upstream == "unreachable":
        port = _closed_port()
    else:
        status = int(upstream)

        def refuse(request: Request) -> Response:
            return Response(status, b'{"error":"no"}')

        server = await start_listener(refuse, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
    relay = {"service": "relay", "relay_url": f"ws://127.0.0.1:{port}/v1/realtime", **RETRY}
    async with running_gateway(**relay) as gateway:
        conn = await connect(gateway)
        other = await post(conn, "/test", framed(fixture_packets()[:1]), ENGLISH, end=False)
        stream = await post(conn, "/speech", framed(fixture_packets()[:3]), ENGLISH)
        await stream.closed(WAIT_S)
        await other.end()
        await other.closed(5)
        await conn.close()
    if server is not None:
        server.close()
    assert stream.status == {"unreachable": 500, "429": 429, "403": 403}[upstream]
    assert bytes(stream.body) == b""
    assert other.text_results() == [{"channel_id": "ch_0", "message": "n: 120", "type": "test"}]
    retried = 0 if upstream == "403" else RETRY["max_retry"]
    assert gateway.metrics.relay_retries == ({(("phase", "connect"),): retried} if retried else {})
