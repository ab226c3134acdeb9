"""Spec §2.2 (request headers) and §2.3 (body framing): the sans-I/O readers, from bytes alone."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from koe.protocols.sora import (
    HEADER_BYTES,
    HeaderPacketReader,
    InvalidHeader,
    MissingHeader,
    Packet,
    PayloadTooLarge,
    RawPacketReader,
    SoraRequest,
    TruncatedPacket,
    frame_packet,
    packet_reader,
    parse_request_headers,
    request_headers,
)
from tests.conftest import FIXTURES

SORA = FIXTURES / "sora"


def fixture_packets() -> list[bytes]:
    lines = (SORA / "opus_packets.jsonl").read_text().splitlines()
    return [base64.b64decode(json.loads(line)["b64"]) for line in lines]


def test_header_example_from_suzu_testdata() -> None:
    # testdata/header.jsonl: ts=1667274760504000 µs, seq=0, len=3, payload FC FF FE.
    data = base64.b64decode("AAXsYKfXwsAAAAAAAAAAAAAAAAP8//4=")
    assert HeaderPacketReader().feed(data) == [Packet(b"\xfc\xff\xfe", 1667274760504000, 0)]


def test_hdr_silent_fixture() -> None:
    data = (SORA / "hdr_silent.bin").read_bytes()
    assert HeaderPacketReader().feed(data) == [Packet(b"\xfc\xff\xfe", 1700000000000000, 0)]


def test_header_split_at_every_offset() -> None:
    packets = fixture_packets()[:3]
    stream = b"".join(frame_packet(p, 1000 + i, i) for i, p in enumerate(packets))
    for cut in range(len(stream) + 1):
        reader = HeaderPacketReader()
        got = reader.feed(stream[:cut]) + reader.feed(stream[cut:])
        reader.end()
        assert [p.payload for p in got] == packets
        assert [p.sequence for p in got] == [0, 1, 2]


@given(st.lists(st.binary(max_size=300), max_size=8), st.lists(st.integers(1, 64), max_size=40))
def test_header_reassembly_any_chunking(payloads: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(frame_packet(p, i, i) for i, p in enumerate(payloads))
    reader = HeaderPacketReader()
    got: list[Packet] = []
    pos = 0
    for size in cuts:
        got += reader.feed(stream[pos : pos + size])
        pos += size
    got += reader.feed(stream[pos:])
    reader.end()
    assert [p.payload for p in got] == payloads
    assert reader.pending_bytes == 0


def test_payload_too_large_message_is_suzus() -> None:
    header = (0).to_bytes(8, "big") + (0).to_bytes(8, "big") + (0x1000000).to_bytes(4, "big")
    with pytest.raises(PayloadTooLarge, match=r"^PAYLOAD-TOO-LARGE: 16777216$"):
        HeaderPacketReader().feed(header)


def test_max_length_is_accepted_then_waits() -> None:
    reader = HeaderPacketReader()
    header = bytes(16) + (0xFFFFFF).to_bytes(4, "big")
    assert reader.feed(header + b"x" * 100) == []
    assert reader.pending_bytes == HEADER_BYTES + 100
    with pytest.raises(TruncatedPacket, match="100 of 16777215"):
        reader.end()


def test_length_ffffffff_split_header() -> None:
    reader = HeaderPacketReader()
    header = bytes(16) + b"\xff\xff\xff\xff"
    assert reader.feed(header[:7]) == []
    with pytest.raises(PayloadTooLarge, match="4294967295"):
        reader.feed(header[7:])


def test_truncated_header_at_end() -> None:
    reader = HeaderPacketReader()
    assert reader.feed(b"\xfc\xff\xfe") == []  # 3 bytes never complete a 20-byte header (the TLS fixture)
    with pytest.raises(TruncatedPacket, match="3 of 20"):
        reader.end()


def test_zero_length_packet_is_a_packet_the_door_skips() -> None:
    assert HeaderPacketReader().feed(frame_packet(b"")) == [Packet(b"", 0, 0)]


def test_raw_one_frame_is_one_packet_never_split_or_merged() -> None:
    reader = RawPacketReader()
    three = (SORA / "three.bin").read_bytes()
    assert reader.feed(three) == [Packet(three)]  # as Suzu: n: 15
    assert reader.feed(b"") == []
    reader.end()


@given(st.lists(st.binary(min_size=1, max_size=200), max_size=20))
def test_raw_frames_map_one_to_one(frames: list[bytes]) -> None:
    reader = packet_reader("raw")
    assert [p.payload for f in frames for p in reader.feed(f)] == frames


@given(st.binary(max_size=200))
def test_header_reader_never_raises_anything_unexpected(garbage: bytes) -> None:
    reader = HeaderPacketReader()
    try:
        reader.feed(garbage)
        reader.end()
    except (PayloadTooLarge, TruncatedPacket):
        pass


def test_headers_case_insensitive_and_roundtrip() -> None:
    request = SoraRequest("sora", "S1", "C1", "ja-JP", client_id="client-1")
    assert parse_request_headers([(k.upper(), v) for k, v in request_headers(request)]) == request
    assert parse_request_headers({"sora-audio-streaming-language-code": "en-US"}) == SoraRequest("", "", "", "en-US")


def test_missing_or_blank_language_code() -> None:
    with pytest.raises(MissingHeader, match="sora-audio-streaming-language-code"):
        parse_request_headers([("sora-channel-id", "sora")])
    with pytest.raises(MissingHeader):
        parse_request_headers([("sora-audio-streaming-language-code", "  ")])


def test_overlong_header_value() -> None:
    with pytest.raises(InvalidHeader):
        parse_request_headers([("sora-audio-streaming-language-code", "x" * 1000)])


def test_unknown_framing() -> None:
    with pytest.raises(ValueError, match="unknown framing"):
        packet_reader("json")  # type: ignore[arg-type]
