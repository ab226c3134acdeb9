"""Bad input (spec §2.8): every case gets a clean answer in the Sora protocol, and the other streams go on."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import av
import numpy as np

from koe.audio.ogg import read_ogg_opus
from koe.protocols.sora import frame_packet
from tests.server.sora.support import SORA, connect, fixture_packets, framed, post, running_gateway

PACKETS = fixture_packets()
BAD_CODE3 = fixture_packets("bad_code3.jsonl")[0]


async def test_garbage_instead_of_http() -> None:
    async with running_gateway(audio_streaming_header=True) as gateway:
        conn = await connect(gateway)
        survivor = await post(conn, "/test", framed(PACKETS[:1]), end=False)
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        writer.write(bytes(range(256)) * 4)
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        # Garbage after a valid preface: the HTTP/2 connection is closed with GOAWAY, nothing else is affected.
        reader2, writer2 = await asyncio.open_connection("127.0.0.1", gateway.port)
        writer2.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\xff" * 64)
        closed = await asyncio.wait_for(reader2.read(), 5)
        writer2.close()
        await survivor.send(framed(PACKETS[1:2])[0])
        await survivor.end()
        await survivor.closed(5)
        await conn.close()
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert answer.endswith(b'{"message":"Bad Request"}\n')
    assert b"\x00\x00\x08\x07" in closed  # a GOAWAY frame (length 8, type 7)
    assert [r["message"] for r in survivor.text_results()] == ["n: 120", "n: 77"]


async def test_length_ffffffff_is_one_error_object_for_that_stream_only() -> None:
    async with running_gateway(audio_streaming_header=True) as gateway:
        conn = await connect(gateway)
        survivor = await post(conn, "/test", framed(PACKETS[:1]), end=False)
        victim = await post(conn, "/test", framed(PACKETS[:1]), end=False)
        await victim.send(bytes(16) + b"\xff\xff\xff\xff" + b"junk")
        await victim.closed(5)
        more = await victim.send(framed(PACKETS[:1])[0])  # the gateway told us to stop (RST_STREAM NO_ERROR)
        await survivor.send(framed(PACKETS[1:2])[0])
        await survivor.end()
        await survivor.closed(5)
        await conn.close()
    # Unlike the reference gateway: written once, and with its newline (spec §2.8 #4, #5).
    assert bytes(victim.body) == (
        b'{"channel_id":"ch_0","message":"n: 120","type":"test"}\n'
        b'{"reason":"PAYLOAD-TOO-LARGE: 4294967295","type":"error"}\n'
    )
    assert more is False
    assert [r["message"] for r in survivor.text_results()] == ["n: 120", "n: 77"]
    assert gateway.metrics.stream_errors[(("kind", "framing"),)] == 1


async def test_truncated_packet_at_end_of_body() -> None:
    async with running_gateway(audio_streaming_header=True) as gateway:
        conn = await connect(gateway)
        stream = await post(conn, "/test", [framed(PACKETS[:1])[0][:50]])
        await stream.closed(5)
        tls_like = await post(conn, "/test", [(SORA / "silent.bin").read_bytes()])
        await tls_like.closed(5)
        await conn.close()
    (error,) = stream.text_results()
    assert error == {"reason": "the body ended inside a packet (30 of 120 payload bytes)", "type": "error"}
    # Suzu answers 200 with an empty body to 3 bytes in header mode; koe says why nothing came back.
    assert tls_like.text_results()[0]["type"] == "error"


async def test_zero_length_packets_are_skipped() -> None:
    async with running_gateway(audio_streaming_header=True) as gateway:
        conn = await connect(gateway)
        stream = await post(conn, "/test", [frame_packet(b""), framed(PACKETS[:1])[0], frame_packet(b"")])
        await stream.closed(5)
        await conn.close()
    assert [r["message"] for r in stream.text_results()] == ["n: 120"]
    assert gateway.metrics.empty_packets == 2


async def test_one_byte_code3_packet_on_the_ogg_path(tmp_path: Path) -> None:
    # The packet that crashes the reference gateway's Ogg writer (and with it the whole process).
    assert BAD_CODE3 == b"\x03"
    async with running_gateway(audio_streaming_header=True, dump_ogg_dir=tmp_path) as gateway:
        conn = await connect(gateway)
        survivor = await post(conn, "/test", framed(PACKETS[:1]), end=False)
        stream = await post(conn, "/dump", framed([PACKETS[0], BAD_CODE3, PACKETS[1]]))
        await stream.closed(5)
        await survivor.end()
        await survivor.closed(5)
        await conn.close()
    payloads = [base64.b64decode(r["payload"]) for r in stream.text_results()]
    assert payloads == [PACKETS[0], BAD_CODE3, PACKETS[1]]  # the dump line still records what Sora sent
    (ogg,) = list(tmp_path.glob("*.ogg"))  # noqa: ASYNC240  # a test reading its own temp folder
    parsed = read_ogg_opus(ogg.read_bytes())
    assert [p.data for p in parsed.packets] == [PACKETS[0], PACKETS[1]]  # left out of the Ogg file
    assert gateway.metrics.malformed_packets == 1
    assert survivor.text_results() == [{"channel_id": "ch_0", "message": "n: 120", "type": "test"}]


async def test_dump_ogg_matches_the_reference_layout_and_decodes(tmp_path: Path) -> None:
    golden = (SORA / "suzu_opus2ogg.ogg").read_bytes()
    async with running_gateway(audio_streaming_header=True, dump_ogg_dir=tmp_path) as gateway:
        conn = await connect(gateway)
        stream = await post(conn, "/dump", framed(PACKETS))
        await stream.closed(10)
        await conn.close()
    ogg = tmp_path / "SESSION0000000000000000000A-CONNECTION000000000000000AB.ogg"
    ours = ogg.read_bytes()
    assert len(ours) == len(golden) == 8474
    # Identical but for the random serial (bytes 14-17 of each page) and the CRC that covers it (22-25).
    ours_pages, golden_pages = _pages(ours), _pages(golden)
    assert len(ours_pages) == len(golden_pages) == 103
    for mine, theirs in zip(ours_pages, golden_pages, strict=True):
        assert _blank(mine) == _blank(theirs)
    parsed = read_ogg_opus(ours)
    assert parsed.head.pre_skip == 3840
    assert [p.granule for p in parsed.packets][:3] == [961, 1921, 2881]
    assert parsed.final_granule == 96961
    assert not parsed.eos
    with av.open(str(ogg)) as container:
        samples = sum(frame.samples for frame in container.decode(audio=0))
    assert samples == 93120  # 101 × 960 − 3840 pre-skip, as libavformat decodes the golden file
    decoded = np.concatenate([f.to_ndarray().reshape(-1) for f in av.open(str(ogg)).decode(audio=0)])
    assert float(np.abs(decoded).max()) > 0.05  # the 440 Hz tone is there


def _pages(data: bytes) -> list[bytes]:
    pages, pos = [], 0
    while pos < len(data):
        segments = data[pos + 26]
        size = 27 + segments + sum(data[pos + 27 : pos + 27 + segments])
        pages.append(data[pos : pos + size])
        pos += size
    return pages


def _blank(page: bytes) -> bytes:
    return page[:14] + bytes(4) + page[18:22] + bytes(4) + page[26:]


async def test_payload_too_large_in_dump_file_untouched(tmp_path: Path) -> None:
    dump_file = tmp_path / "dump.jsonl"
    async with running_gateway(audio_streaming_header=True, dump_file=dump_file) as gateway:
        conn = await connect(gateway)
        stream = await post(conn, "/dump", [bytes(16) + (0x1000000).to_bytes(4, "big")])
        await stream.closed(5)
        await conn.close()
    assert stream.text_results() == [{"reason": "PAYLOAD-TOO-LARGE: 16777216", "type": "error"}]
    assert dump_file.read_bytes() == b""
    assert json.loads(bytes(stream.body))["type"] == "error"
