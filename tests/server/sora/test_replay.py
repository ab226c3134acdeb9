"""Spec §10: the captured exchanges with the reference gateway, replayed against koe's Sora door.

The captures were made with `sora-audio-streaming-language-code: ja-JP` against Suzu's `/speech` with its `test`
service selected. koe replays them against `/speech` with `sora.service = "test"` (where no language check applies,
since nothing is transcribed) and against `POST /test`, and compares the response bytes with what Suzu answered.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import socket
import time
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import pytest

from koe.protocols.sora_results import ResultStreamReader
from tests.server.sora.support import (
    CAPTURE_REQUEST,
    SORA,
    capture,
    connect,
    fixture_packets,
    framed,
    post,
    running_gateway,
)

PACKETS = fixture_packets()


@pytest.mark.parametrize("path", ["/speech", "/test", "/speech/"])
async def test_req2_header_framing(path: str) -> None:
    expected = capture("req2_header.json")["response"]["body"].encode()
    async with running_gateway(audio_streaming_header=True) as gateway:
        conn = await connect(gateway)
        stream = await post(conn, path, framed(PACKETS[:10]))
        await stream.closed(5)
        await conn.close()
    assert stream.status == 200
    assert ("content-type", "application/json") in stream.headers
    assert not any(name == "content-length" for name, _ in stream.headers)
    assert bytes(stream.body) == expected
    assert stream.data_frames == expected.splitlines(keepends=True)  # one JSON object per DATA frame


async def test_req1_raw_framing_and_query_ignored() -> None:
    expected = capture("req1_noheader.json")["response"]["body"].encode()
    assert expected == capture("req2_header.json")["response"]["body"].encode()
    async with running_gateway(audio_streaming_header=False) as gateway:
        conn = await connect(gateway)
        stream = await post(conn, "/speech?x=1", PACKETS[:10])
        await stream.closed(5)
        await conn.close()
    assert bytes(stream.body) == expected


async def test_req3_raw_coalesced_frames_stay_one_packet_each() -> None:
    body = capture("req3_noheader_coalesce.json")["response"]["body"].encode()
    frames = [b"".join(PACKETS[i : i + 3]) for i in (0, 3, 6)]
    async with running_gateway(audio_streaming_header=False) as gateway:
        conn = await connect(gateway)
        stream = await post(conn, "/test", frames)
        await stream.closed(5)
        await conn.close()
    assert bytes(stream.body) == body  # n: 279, n: 232, n: 225 — without a header there is no way to split


async def test_req4_header_coalesced_frames_are_split() -> None:
    body = capture("req4_header_coalesce.json")["response"]["body"].encode()
    f = framed(PACKETS[:9])
    frames = [b"".join(f[i : i + 3]) for i in (0, 3, 6)]
    async with running_gateway(audio_streaming_header=True) as gateway:
        conn = await connect(gateway)
        stream = await post(conn, "/test", frames)
        await stream.closed(5)
        await conn.close()
    assert bytes(stream.body) == body


async def test_req5_silent_packets_every_wait_after_the_last_packet() -> None:
    reference = capture("req5_silence.json")
    assert reference["response"]["body"].count('"n: 3"') == 4
    async with running_gateway(audio_streaming_header=True, time_to_wait_for_opus_packet_ms=250) as gateway:
        conn = await connect(gateway)
        f = framed(PACKETS[:5])
        stream = await post(conn, "/test", f[:3], end=False)
        await asyncio.sleep(1.1)
        for frame in f[3:]:
            await stream.send(frame)
        await stream.end()
        await stream.closed(5)
        await conn.close()
    assert bytes(stream.body) == reference["response"]["body"].encode()
    times = [t for t, v in stream.received if v["message"] == "n: 3"]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(0.15 < g < 0.4 for g in gaps), gaps  # every 250 ms, loosely: this is a functional check
    assert gateway.metrics.silent_packets_injected == 4


async def test_disabled_silent_packets() -> None:
    async with running_gateway(
        audio_streaming_header=True, time_to_wait_for_opus_packet_ms=50, disable_silent_packet=True
    ) as gateway:
        conn = await connect(gateway)
        stream = await post(conn, "/test", framed(PACKETS[:1]), end=False)
        await asyncio.sleep(0.3)
        await stream.end()
        await stream.closed(5)
        await conn.close()
    assert [v["message"] for v in stream.text_results()] == ["n: 120"]


async def test_req6_dump_lines_and_file(tmp_path: Path) -> None:
    reference = capture("req6_dump.json")["response"]["body"].encode().splitlines()
    dump_file = tmp_path / "dump.jsonl"
    async with running_gateway(audio_streaming_header=True, dump_file=dump_file) as gateway:
        conn = await connect(gateway)
        before = time.time() * 1000
        stream = await post(conn, "/dump", framed(PACKETS[:2]))
        await stream.closed(5)
        await conn.close()
    lines = bytes(stream.body).splitlines()
    assert len(lines) == 2
    for ours, theirs in zip(lines, reference, strict=True):
        mine, ref = json.loads(ours), json.loads(theirs)
        assert list(mine) == list(ref)  # same fields, same order
        assert mine["timestamp"] >= before - 1  # receive time, UNIX ms
        mine.pop("timestamp")
        ref.pop("timestamp")
        assert mine == ref
        assert ours.split(b',"channel_id"', 1)[1] == theirs.split(b',"channel_id"', 1)[1]
    assert dump_file.read_bytes() == bytes(stream.body)


async def test_dump_concurrent_streams_stay_separate() -> None:
    # The last four lines of dump-header.jsonl: two /dump streams on one HTTP/2 connection.
    reference = [json.loads(line) for line in (SORA / "dump-header.jsonl").read_text().splitlines()[2:]]
    async with running_gateway(audio_streaming_header=True) as gateway:
        conn = await connect(gateway)
        b_request = CAPTURE_REQUEST.__class__("sora", "S", "CONN-B", "en-US")
        a_request = CAPTURE_REQUEST.__class__("sora", "S", "CONN-A", "ja-JP")
        b = await post(conn, "/dump", [], b_request, end=False)
        a = await post(conn, "/dump", [], a_request, end=False)
        for _ in range(2):
            await b.send(framed([bytes([0x78]) + bytes(9)])[0])
            await a.send(framed([b"\xfc\xff\xfe"])[0])
        await a.end()
        await b.end()
        await asyncio.gather(a.closed(5), b.closed(5))
        await conn.close()
    for stream, conn_id in ((a, "CONN-A"), (b, "CONN-B")):
        ours = [{k: v for k, v in r.items() if k != "timestamp"} for r in stream.text_results()]
        theirs = [{k: v for k, v in r.items() if k != "timestamp"} for r in reference if r["connection_id"] == conn_id]
        assert ours == theirs


async def test_dump_noheader_with_only_the_language_header() -> None:
    expected = json.loads((SORA / "dump-noheader.jsonl").read_text())
    async with running_gateway(audio_streaming_header=False) as gateway:
        conn = await connect(gateway)
        stream = await conn.open_stream("/dump", [("sora-audio-streaming-language-code", "en-US")])
        await stream.send((SORA / "silent.bin").read_bytes())
        await stream.end()
        await stream.closed(5)
        await conn.close()
    (ours,) = stream.text_results()
    assert {k: v for k, v in ours.items() if k != "timestamp"} == {
        k: v for k, v in expected.items() if k != "timestamp"
    }


async def test_req8_not_found_and_405() -> None:
    reference = capture("req8_404.json")
    async with running_gateway() as gateway:
        conn = await connect(gateway)
        stream = await post(conn, "/nope", [PACKETS[0]])
        await stream.closed(5)
        get = await conn.open_stream("/speech", [], method="GET")
        await get.closed(5)
        await conn.close()
    assert stream.status == 404
    assert bytes(stream.body) == reference["response"]["body"].encode() == b'{"message":"Not Found"}\n'
    assert get.status == 405
    assert ("allow", "OPTIONS, POST") in get.headers


async def test_req7_missing_language_is_400_not_500() -> None:
    # Deliberate difference: the reference gateway answers 500 {"message":"Internal Server Error"} (spec §2.6);
    # the request is the client's error, so koe answers 400 and names the missing header.
    reference = capture("req7_nolang.json")
    assert '"Internal Server Error"' in reference["response"]["body"]
    async with running_gateway(audio_streaming_header=True) as gateway:
        conn = await connect(gateway)
        headers = [h for h in (("sora-channel-id", "sora"), ("sora-connection-id", "C")) if h]
        stream = await conn.open_stream("/speech", headers)
        await stream.send(framed(PACKETS[:1])[0])
        await stream.closed(5)
        ok = await post(conn, "/test", framed(PACKETS[:1]))  # the connection is still usable
        await ok.closed(5)
        await conn.close()
    assert stream.status == 400
    assert json.loads(bytes(stream.body)) == {
        "message": "Bad Request",
        "reason": "missing request header sora-audio-streaming-language-code",
    }
    assert ok.text_results() == [{"channel_id": "ch_0", "message": "n: 120", "type": "test"}]


@pytest.mark.parametrize("how", ["rst", "tcp_close"])
async def test_req9_req10_client_vanishes_mid_stream(how: str) -> None:
    reference = capture("req9_rst.json" if how == "rst" else "req10_close.json")
    async with running_gateway(audio_streaming_header=True) as gateway:
        survivor_conn = await connect(gateway)
        survivor = await post(survivor_conn, "/test", framed(PACKETS[:2]), end=False)
        conn = await connect(gateway)
        stream = await post(conn, "/speech", framed(PACKETS[:3]), end=False)
        while len(stream.received) < 3:
            await stream.results.get()
        if how == "rst":
            await stream.cancel()
        else:
            await conn.abort()
        for _ in range(50):
            if gateway.metrics.client_resets:
                break
            await asyncio.sleep(0.01)
        for frame in framed(PACKETS[2:5]):
            await survivor.send(frame)
        await survivor.end()
        await survivor.closed(5)
        assert gateway.metrics.client_resets == 1
        assert gateway.metrics.streams_active == 0
        await survivor_conn.close()
        await conn.close()
    assert bytes(stream.body) == reference["response"]["body"].encode()
    assert [v["message"] for v in survivor.text_results()] == ["n: 120", "n: 77", "n: 82", "n: 78", "n: 76"]


def _h2_frames(raw: bytes) -> list[tuple[str, int, bytes]]:
    """Decode server→client bytes with a client-side h2 connection: (event, stream, data) in order."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    conn.send_headers(1, [(":method", "POST"), (":scheme", "http"), (":authority", "127.0.0.1"), (":path", "/speech")])
    out = []
    for event in conn.receive_data(raw):
        if isinstance(event, h2.events.ResponseReceived):
            status = dict(event.headers or [])[":status"]
            out.append(("headers", 1, str(status).encode()))
        elif isinstance(event, h2.events.DataReceived):
            out.append(("data", event.stream_id or 0, event.data or b""))
        elif isinstance(event, h2.events.StreamEnded):
            out.append(("end", event.stream_id or 0, b""))
    return out


def test_req11_raw_client_bytes_replayed_byte_for_byte() -> None:
    """The captured client bytes, unchanged (preface, SETTINGS, HPACK HEADERS, DATA, GOAWAY), over a plain socket."""
    c2s = (SORA / "req11_raw_header.json.c2s.bin").read_bytes()
    s2c = (SORA / "req11_raw_header.json.s2c.bin").read_bytes()

    async def run() -> bytes:
        async with running_gateway(audio_streaming_header=True) as gateway:
            reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
            writer.write(c2s)
            await writer.drain()
            received = b""
            while True:
                chunk = await asyncio.wait_for(reader.read(65536), 5)
                if not chunk:
                    break
                received += chunk
            writer.close()
            return received

    loop = asyncio.new_event_loop()
    try:
        received = loop.run_until_complete(run())
    finally:
        loop.close()
    theirs_frames = _h2_frames(s2c)
    ours_frames = _h2_frames(received)
    assert ours_frames == theirs_frames
    assert [f[2] for f in ours_frames if f[0] == "data" and f[2]] == [
        b'{"channel_id":"ch_0","message":"n: 120","type":"test"}\n',
        b'{"channel_id":"ch_0","message":"n: 77","type":"test"}\n',
        b'{"channel_id":"ch_0","message":"n: 82","type":"test"}\n',
    ]
    # The server announces the reference gateway's SETTINGS values (h2 also sends ENABLE_PUSH and
    # ENABLE_CONNECT_PROTOCOL, so the frame is longer; the values Suzu sends are the same).
    theirs_settings, ours_settings = _settings(s2c), _settings(received)
    assert {k: ours_settings[k] for k in theirs_settings} == theirs_settings


def _settings(raw: bytes) -> dict[int, int]:
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    conn.send_headers(1, [(":method", "POST"), (":scheme", "http"), (":authority", "127.0.0.1"), (":path", "/speech")])
    for event in conn.receive_data(raw):
        if isinstance(event, h2.events.RemoteSettingsChanged):
            return {int(k): v.new_value for k, v in event.changed_settings.items()}
    raise AssertionError("no SETTINGS")


def test_result_reader_reads_every_capture() -> None:
    for path in sorted(SORA.glob("req*.json")):
        body = json.loads(path.read_text())["response"]["body"].encode()
        reader = ResultStreamReader()
        values = reader.feed(body)
        reader.end()
        assert all(isinstance(v, dict) for v in values), path.name


def test_free_port_helper_not_needed() -> None:
    # Gateways bind port 0 and report the port they got; nothing in these tests picks a fixed port.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        assert sock.getsockname()[1] > 0
    assert base64.b64decode("/P/+") == b"\xfc\xff\xfe"
