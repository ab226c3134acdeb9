"""The `relay` service's connect phase (spec §2.6): the upstream's status, an empty body, and no other stream hurt.

The full relay path runs against koe's own Realtime door in `test_sora_relay_realtime.py` once that door exists.
"""

from __future__ import annotations

import socket

import pytest

from koe.net.h2listener import Request, Response, start_listener
from koe.protocols import realtime_transcription_client as rt
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


def test_session_update_shapes() -> None:
    openai = rt.session_update("openai", model="gpt-4o-transcribe", language="en-US", silence_duration_ms=400)
    assert openai["session"]["type"] == "transcription"
    assert openai["session"]["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert openai["session"]["audio"]["input"]["transcription"] == {"model": "gpt-4o-transcribe", "language": "en"}
    voicelive = rt.session_update("voicelive", model="azure-speech", language="ja-JP")
    assert voicelive["session"]["input_audio_transcription"] == {"model": "azure-speech", "language": "ja-JP"}
    assert voicelive["session"]["turn_detection"]["create_response"] is False


def test_parse_server_events() -> None:
    assert rt.parse_server_event('{"type":"input_audio_buffer.speech_started","item_id":"i","audio_start_ms":5}') == (
        rt.SpeechStarted("i", 5)
    )
    completed = '{"type":"conversation.item.input_audio_transcription.completed","item_id":"i","transcript":"hi"}'
    assert rt.parse_server_event(completed) == rt.TranscriptCompleted("i", "hi")
    assert rt.parse_server_event('{"type":"error","error":{"code":"x","message":"m"}}') == rt.UpstreamError("x", "m")
    assert rt.parse_server_event('{"type":"rate_limits.updated"}') == rt.Ignored("rate_limits.updated")
    with pytest.raises(rt.RelayProtocolError):
        rt.parse_server_event("[1]")
    with pytest.raises(rt.RelayProtocolError):
        rt.parse_server_event("nope")
