"""Ogg Opus in memory: the writer's output is what pion and libavformat write byte for byte, PyAV decodes it,
and the reader gives back every packet and header field of the shared fixtures, in any chunking."""

from __future__ import annotations

import base64
import io
import json
import struct
from pathlib import Path

import av
import numpy as np
import pytest

from koe.audio.ogg import (
    PION_VENDOR,
    OggError,
    OggOpusReader,
    OggOpusWriter,
    OpusHead,
    build_page,
    ogg_crc,
    read_ogg_opus,
)
from koe.audio.opus import FRAME_SAMPLES, OpusEncoder


@pytest.fixture(scope="module")
def sora_packets(fixtures_dir: Path) -> list[bytes]:
    lines = (fixtures_dir / "sora" / "opus_packets.jsonl").read_text().splitlines()
    return [base64.b64decode(json.loads(line)["b64"]) for line in lines]


@pytest.fixture(scope="module")
def suzu_ogg(fixtures_dir: Path) -> bytes:
    return (fixtures_dir / "sora" / "suzu_opus2ogg.ogg").read_bytes()


@pytest.fixture(scope="module")
def lavf_ogg(fixtures_dir: Path) -> bytes:
    return (fixtures_dir / "audio" / "reply_48k_opus.ogg").read_bytes()


def _decode(data: bytes) -> int:
    with av.open(io.BytesIO(data)) as container:
        return sum(frame.samples for frame in container.decode(audio=0))


def test_crc_matches_the_ogg_polynomial() -> None:
    # Check value of CRC-32/MPEG-2's polynomial without reflection, initial value or final XOR (as Ogg uses it).
    assert ogg_crc(b"") == 0
    assert ogg_crc(b"123456789") == 0x89A1897F


def test_reads_the_reference_gateways_pion_ogg(suzu_ogg: bytes, sora_packets: list[bytes]) -> None:
    stream = read_ogg_opus(suzu_ogg)
    assert stream.head == OpusHead(channels=1, pre_skip=3840, input_rate=48000, output_gain=0)
    assert stream.tags.vendor == "pion\x00"
    assert stream.tags.comments == ()
    assert [p.data for p in stream.packets] == sora_packets
    assert [p.granule for p in stream.packets[:3]] == [961, 1921, 2881]
    assert stream.pages == 103
    assert stream.final_granule == 96961
    assert not stream.eos


def test_writes_the_reference_gateways_ogg_byte_for_byte(suzu_ogg: bytes, sora_packets: list[bytes]) -> None:
    serial = read_ogg_opus(suzu_ogg).serial
    writer = OggOpusWriter(pre_skip=3840, vendor=PION_VENDOR, initial_granule=1, serial=serial)
    out = writer.header() + b"".join(writer.write(packet) for packet in sora_packets)
    assert out == suzu_ogg
    assert _decode(out) == 93120  # 101 × 960 − 3840, as the fixture README says


def test_reads_libavformats_ogg(lavf_ogg: bytes) -> None:
    stream = read_ogg_opus(lavf_ogg)
    assert stream.head.pre_skip == 312
    assert stream.tags.vendor == "Lavf62.12.102"
    assert stream.tags.comments == ("encoder=Lavf62.12.102",)
    assert len(stream.packets) == 221
    assert stream.pages == 7
    assert stream.final_granule == 211512
    assert stream.samples == 211200
    assert stream.eos
    assert all(p.data[0] >> 3 in (13, 15) for p in stream.packets)


def test_writes_libavformats_ogg_byte_for_byte(lavf_ogg: bytes) -> None:
    source = read_ogg_opus(lavf_ogg)
    writer = OggOpusWriter(
        pre_skip=312,
        vendor=source.tags.vendor,
        comments=source.tags.comments,
        serial=source.serial,
        packets_per_page=50,
    )
    out = writer.header() + b"".join(writer.write(p.data) for p in source.packets)
    out += writer.close(final_granule=source.final_granule)
    assert out == lavf_ogg


def test_pyav_decodes_a_fresh_stream_with_eos() -> None:
    pcm = np.rint(np.sin(2 * np.pi * 300 * np.arange(48000) / 48000) * 8000).astype(np.int16)
    encoder = OpusEncoder()
    packets = encoder.encode(pcm) + encoder.flush()
    writer = OggOpusWriter(pre_skip=encoder.lookahead_samples, packets_per_page=10, comments=["title=tone"])
    data = writer.header() + b"".join(writer.write(p) for p in packets) + writer.close()
    stream = read_ogg_opus(data)
    assert stream.eos
    assert stream.tags.vendor == "koe"
    assert stream.tags.comments == ("title=tone",)
    assert stream.final_granule == len(packets) * FRAME_SAMPLES
    assert _decode(data) == len(packets) * FRAME_SAMPLES - encoder.lookahead_samples


def test_empty_eos_page_when_nothing_is_pending(sora_packets: list[bytes]) -> None:
    writer = OggOpusWriter(serial=7)
    data = writer.header() + writer.write(sora_packets[0]) + writer.close()
    stream = read_ogg_opus(data)
    assert stream.eos
    assert stream.pages == 4
    assert len(stream.packets) == 1
    assert writer.close() == b""


def test_reader_accepts_any_chunking(suzu_ogg: bytes, sora_packets: list[bytes]) -> None:
    for size in (1, 7, 27, 1000):
        reader = OggOpusReader()
        packets = [p.data for i in range(0, len(suzu_ogg), size) for p in reader.feed(suzu_ogg[i : i + size])]
        reader.close()
        assert packets == sora_packets
        assert reader.head is not None
        assert reader.head.pre_skip == 3840


def _raw_page(flags: int, granule: int, sequence: int, lacing: bytes, body: bytes) -> bytes:
    page = bytearray(struct.pack("<4sBBqIIIB", b"OggS", 0, flags, granule, 1, sequence, 0, len(lacing)) + lacing + body)
    page[22:26] = struct.pack("<I", ogg_crc(page))
    return bytes(page)


def test_packet_spanning_pages_is_reassembled() -> None:
    big = bytes(range(256)) * 2  # 512 bytes: lacing 255, 255, 2, cut after the first 255
    head = build_page(0x02, 0, 1, 0, [OpusHead().to_bytes()])
    tags = build_page(0, 0, 1, 1, [b"OpusTags" + struct.pack("<II", 0, 0)])
    first = _raw_page(0, -1, 2, bytes([255]), big[:255])  # granule -1: no packet ends on this page
    second = _raw_page(0x01, 960, 3, bytes([255, 2]), big[255:])
    stream = read_ogg_opus(head + tags + first + second)
    assert [p.data for p in stream.packets] == [big]
    assert stream.final_granule == 960
    dropped = _raw_page(0, 960, 3, bytes([2]), big[:2])  # not flagged as continued
    with pytest.raises(OggError, match="drops a packet"):
        read_ogg_opus(head + tags + first + dropped)


def test_corruption_is_reported(suzu_ogg: bytes) -> None:
    flipped = bytearray(suzu_ogg)
    flipped[200] ^= 0x01
    with pytest.raises(OggError, match="CRC mismatch"):
        read_ogg_opus(bytes(flipped))
    with pytest.raises(OggError, match="not an Ogg stream"):
        read_ogg_opus(b"RIFF" + bytes(100))
    with pytest.raises(OggError, match="middle of a page"):
        read_ogg_opus(suzu_ogg[:-5])
    with pytest.raises(OggError, match="before its OpusHead"):
        read_ogg_opus(b"")


def test_missing_page_and_foreign_stream(suzu_ogg: bytes) -> None:
    stream = read_ogg_opus(suzu_ogg)
    pages = []
    offset = 0
    while offset < len(suzu_ogg):
        size = 27 + suzu_ogg[offset + 26] + sum(suzu_ogg[offset + 27 : offset + 27 + suzu_ogg[offset + 26]])
        pages.append(suzu_ogg[offset : offset + size])
        offset += size
    with pytest.raises(OggError, match="page 5 is missing"):
        read_ogg_opus(b"".join(pages[:5] + pages[6:]))
    foreign = build_page(0, 5000, stream.serial ^ 1, 3, [b"\xfc\xff\xfe"])
    with pytest.raises(OggError, match="second logical stream"):
        read_ogg_opus(b"".join(pages[:3]) + foreign)
    not_opus = build_page(0x02, 0, 9, 0, [b"\x01vorbis" + bytes(23)])
    with pytest.raises(OggError, match="not an Ogg Opus stream"):
        read_ogg_opus(not_opus)


def test_writer_rejects_misuse(sora_packets: list[bytes]) -> None:
    writer = OggOpusWriter()
    with pytest.raises(OggError, match="header first"):
        writer.write(sora_packets[0])
    writer.header()
    with pytest.raises(OggError, match="already written"):
        writer.header()
    with pytest.raises(OggError, match="empty packet"):
        writer.write(b"")
    with pytest.raises(OggError, match="no duration"):
        writer.write(b"\x03")
    writer.close()
    with pytest.raises(OggError, match="closed"):
        writer.write(sora_packets[0])


def test_several_packets_per_page_respect_the_segment_limit() -> None:
    writer = OggOpusWriter(packets_per_page=1000, serial=3)
    data = writer.header()
    packet = b"\xfc" + bytes(299)  # two lacing values each: 127 fit on a page
    data += b"".join(writer.write(packet) for _ in range(300)) + writer.close()
    stream = read_ogg_opus(data)
    assert len(stream.packets) == 300
    assert stream.pages == 2 + 3
    assert stream.final_granule == 300 * FRAME_SAMPLES
