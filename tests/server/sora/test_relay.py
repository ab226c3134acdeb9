"""The `relay` service's connect phase (spec §2.6): the upstream's status, an empty body, and no other stream hurt.

The full relay path runs against koe's own Realtime door in `test_relay_realtime.py`; what the relay sends and reads
is checked with the Realtime client, in `tests/protocols/realtime/test_client.py`.
"""

from __future__ import annotations

import socket

import pytest

from koe.net.h2listener import Request, Response, start_listener
from koe.protocols.sora import SoraRequest
from tests.server.sora.support import connect, fixture_packets, framed, post, running_gateway

ENGLISH = SoraRequest("sora", "S", "C", "en-US")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("upstream", ["unreachable", "429"])
async def test_upstream_connect_failure_is_its_status_with_an_empty_body(upstream: str) -> None:
    server = None
    if upstream == "429":

        def too_many(request: Request) -> Response:
            return Response(429, b'{"error":"rate limited"}')

        server = await start_listener(too_many, "127.0.0.1", 0)  # a real HTTP server refusing the upgrade
        port = server.sockets[0].getsockname()[1]
    else:
        port = _closed_port()
    url = f"ws://127.0.0.1:{port}/v1/realtime?intent=transcription"
    async with running_gateway(service="relay", relay_url=url, audio_streaming_header=True) as gateway:
        conn = await connect(gateway)
        other = await post(conn, "/test", framed(fixture_packets()[:1]), ENGLISH, end=False)
        stream = await post(conn, "/speech", framed(fixture_packets()[:3]), ENGLISH)
        await stream.closed(15)
        await other.end()
        await other.closed(5)
        await conn.close()
    if server is not None:
        server.close()
    assert stream.status == (429 if upstream == "429" else 500)
    assert bytes(stream.body) == b""
    assert other.text_results() == [{"channel_id": "ch_0", "message": "n: 120", "type": "test"}]
    assert gateway.metrics.stream_errors[(("kind", "upstream_connect"),)] == 1
