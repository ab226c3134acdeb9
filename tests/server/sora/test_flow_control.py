"""HTTP/2 flow control (RFC 9113 §5.2, §6.9) on the Sora listener's fast paths, with real `h2` clients."""

from __future__ import annotations

import asyncio

import h2.config
import h2.connection
import h2.events
import h2.settings

from koe.protocols.sora import SoraRequest, request_headers
from tests.server.sora.support import connect, post, running_gateway

ENGLISH = SoraRequest("sora", "S", "C", "en-US")


async def test_more_than_a_window_of_audio_on_one_stream() -> None:
    # 3 MiB on one stream: three times the 1 MiB windows, so the listener must give credit back for the
    # frames it handles itself, or the client stalls.
    frames = [bytes([0x78]) + bytes(1023)] * 3072
    async with running_gateway(audio_streaming_header=False) as gateway:
        conn = await connect(gateway)
        stream = await post(conn, "/test", frames, ENGLISH)
        await stream.closed(30)
        await conn.close()
    assert len(stream.text_results()) == 3072
    assert gateway.metrics.packet_bytes == 3072 * 1024


async def test_results_wait_for_a_small_client_window() -> None:
    async with running_gateway(audio_streaming_header=False) as gateway:
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        client.local_settings = h2.settings.Settings(
            client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 100}
        )
        client.initiate_connection()
        head = [(":method", "POST"), (":scheme", "http"), (":authority", "127.0.0.1"), (":path", "/test")]
        client.send_headers(1, head + request_headers(ENGLISH))
        for _ in range(20):  # 20 results of 55 bytes: 1100 bytes through a 100-byte window
            client.send_data(1, b"\x78" * 120)
        client.end_stream(1)
        writer.write(client.data_to_send())
        body, ended, largest = b"", False, 0
        while not ended:
            data = await asyncio.wait_for(reader.read(65536), 5)
            assert data, "the gateway closed the connection"
            for event in client.receive_data(data):
                if isinstance(event, h2.events.DataReceived):
                    assert event.flow_controlled_length is not None
                    largest = max(largest, event.flow_controlled_length)
                    body += event.data or b""
                    client.acknowledge_received_data(event.flow_controlled_length, 1)
                elif isinstance(event, h2.events.StreamEnded):
                    ended = True
            writer.write(client.data_to_send())
        writer.close()
    assert body == b'{"channel_id":"ch_0","message":"n: 120","type":"test"}\n' * 20
    assert largest <= 100  # never more than the window allowed, so results were split and resumed
