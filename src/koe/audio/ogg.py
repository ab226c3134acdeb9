"""Ogg Opus in memory (RFC 3533 pages, RFC 7845 Opus mapping): a writer that muxes Opus packets into pages and
an incremental reader that gives the packets and header fields back.

Write with `OggOpusWriter`: `header()` first (OpusHead and OpusTags pages), then `write(packet)` per packet, then
`close()`. Every call returns the bytes that are ready, so a caller can stream them. Read with
`OggOpusReader.feed(data)`, which accepts any chunking, checks every page's CRC and rejects oversize or malformed
input with `OggError`; `read_ogg_opus(data)` does a whole file at once.

The Sora gateway writes the stream that pion's oggwriter (and so the reference gateway) produces:
`OggOpusWriter(pre_skip=3840, vendor=PION_VENDOR, initial_granule=1)`, one packet per page, no EOS page.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from koe.audio._oggpage import (
    DEFAULT_PRE_SKIP,
    FLAG_BOS,
    FLAG_CONTINUED,
    FLAG_EOS,
    HEADER_BYTES,
    MAX_PACKET_BYTES,
    MAX_PAGE_BYTES,
    MAX_SEGMENTS,
    PION_VENDOR,
    OggError,
    OpusHead,
    OpusTags,
    PageHeader,
    build_page,
    ogg_crc,
    parse_page_header,
)
from koe.audio.opus import OPUS_RATE, packet_duration_samples


class OggOpusWriter:
    """Muxes Opus packets into an Ogg Opus stream, `packets_per_page` packets to a page.

    Granule positions follow RFC 7845 §4: each page carries the sample count (at 48 kHz) at the end of its last
    packet, counted from `initial_granule` (0 in the RFC; pion starts at 1). `serial` defaults to a random one.
    """

    def __init__(
        self,
        *,
        channels: int = 1,
        pre_skip: int = DEFAULT_PRE_SKIP,
        input_rate: int = OPUS_RATE,
        output_gain: int = 0,
        vendor: str | bytes = "koe",
        comments: Iterable[str] = (),
        serial: int | None = None,
        packets_per_page: int = 1,
        initial_granule: int = 0,
    ) -> None:
        if packets_per_page < 1:
            raise ValueError("packets_per_page must be at least 1")
        self.head = OpusHead(channels, pre_skip, input_rate, output_gain)
        vendor_bytes = vendor if isinstance(vendor, bytes) else vendor.encode("utf-8")
        self.tags = OpusTags(vendor_bytes.decode("utf-8", "replace"), tuple(comments))
        self._vendor = vendor_bytes
        self.serial = serial if serial is not None else int.from_bytes(os.urandom(4), "little")
        self.packets_per_page = packets_per_page
        self.granule = initial_granule
        self._sequence = 0
        self._pending: list[bytes] = []
        self._pending_segments = 0
        self._started = False
        self._closed = False

    def header(self) -> bytes:
        """The OpusHead page (BOS) and the OpusTags page. Call once, before the first `write()`."""
        if self._started:
            raise OggError("the Ogg Opus header was already written")
        self._started = True
        return self._page(FLAG_BOS, 0, [self.head.to_bytes()]) + self._page(0, 0, [self.tags.to_bytes(self._vendor)])

    def write(self, packet: bytes, samples: int | None = None) -> bytes:
        """Add one packet (`samples` at 48 kHz, read from its TOC when omitted). Returns any page now complete."""
        if not self._started:
            raise OggError("write the header first")
        if self._closed:
            raise OggError("the stream is closed")
        if not packet:
            raise OggError("an empty packet has no place in an Ogg Opus stream")
        if len(packet) > MAX_PACKET_BYTES:
            raise OggError(f"packet of {len(packet)} bytes exceeds the {MAX_PACKET_BYTES}-byte limit of one page")
        duration = packet_duration_samples(packet) if samples is None else samples
        if duration <= 0:
            raise OggError(f"malformed Opus packet (TOC 0x{packet[0]:02x}, {len(packet)} bytes): no duration")
        out = b""
        segments = len(packet) // 255 + 1
        if self._pending and self._pending_segments + segments > MAX_SEGMENTS:
            out += self._flush(0)
        self._pending.append(packet)
        self._pending_segments += segments
        self.granule += duration
        if len(self._pending) >= self.packets_per_page:
            out += self._flush(0)
        return out

    def close(self, eos: bool = True, final_granule: int | None = None) -> bytes:
        """Flush buffered packets; with `eos`, mark the last page end-of-stream (an empty page if none is left).

        `final_granule` trims the end (RFC 7845 §4.5): the decoder discards samples beyond it.
        """
        if self._closed:
            return b""
        self._closed = True
        if final_granule is not None:
            self.granule = final_granule
        if self._pending or eos:
            return self._flush(FLAG_EOS if eos else 0)
        return b""

    def _flush(self, flags: int) -> bytes:
        packets, self._pending, self._pending_segments = self._pending, [], 0
        return self._page(flags, self.granule, packets)

    def _page(self, flags: int, granule: int, packets: list[bytes]) -> bytes:
        page = build_page(flags, granule, self.serial, self._sequence, packets)
        self._sequence += 1
        return page


@dataclass(frozen=True, slots=True)
class OggPacket:
    data: bytes
    granule: int
    """Granule position of the page this packet ended on (-1: no packet ended on that page)."""
    page_sequence: int
    last_on_page: bool


@dataclass
class OggOpusStream:
    """Everything `read_ogg_opus()` found in one file."""

    head: OpusHead
    tags: OpusTags
    packets: list[OggPacket] = field(default_factory=list)
    serial: int = 0
    pages: int = 0
    final_granule: int = 0
    eos: bool = False

    @property
    def samples(self) -> int:
        """Decoded length at 48 kHz once pre-skip is removed (RFC 7845 §4.2)."""
        return max(0, self.final_granule - self.head.pre_skip)


class OggOpusReader:
    """Incremental reader: `feed()` bytes in any chunking, get header fields and packets out as pages complete.

    `head` and `tags` are set once the two header packets have been read. A packet spanning pages is reassembled,
    up to `max_packet_bytes`. Pages of another logical stream (multiplexed or chained files) raise `OggError`.
    """

    def __init__(self, max_packet_bytes: int = MAX_PACKET_BYTES) -> None:
        self.max_packet_bytes = max_packet_bytes
        self.head: OpusHead | None = None
        self.tags: OpusTags | None = None
        self.serial: int | None = None
        self.pages = 0
        self.final_granule = 0
        self.eos = False
        self._buffer = bytearray()
        self._offset = 0
        self._partial = bytearray()
        self._expect_sequence = 0

    def feed(self, data: bytes | bytearray | memoryview) -> list[OggPacket]:
        """Add bytes; return the audio packets of every page completed by them (headers go to `head`/`tags`)."""
        self._buffer += data
        packets: list[OggPacket] = []
        while True:
            header = parse_page_header(self._buffer, self._offset)
            if header is None or len(self._buffer) - self._offset < header.size:
                break
            page = bytes(self._buffer[self._offset : self._offset + header.size])
            self._offset += header.size
            packets.extend(self._page(header, page))
        if self._offset:
            del self._buffer[: self._offset]
            self._offset = 0
        if len(self._buffer) > MAX_PAGE_BYTES:  # unreachable for valid input: a page header bounds its own size
            raise OggError("Ogg page exceeds the maximum page size")
        return packets

    def close(self) -> None:
        """Check that the input ended on a page boundary and that the headers were complete."""
        if self._buffer:
            raise OggError(f"the Ogg stream ends in the middle of a page ({len(self._buffer)} bytes left over)")
        if self.head is None or self.tags is None:
            raise OggError("the Ogg stream ended before its OpusHead and OpusTags headers")

    def _page(self, header: PageHeader, page: bytes) -> list[OggPacket]:
        check = bytearray(page)
        check[22:26] = b"\0\0\0\0"
        if ogg_crc(check) != header.crc:
            raise OggError(f"CRC mismatch in Ogg page {header.sequence}: the stream is corrupt")
        if self.serial is None:
            if not header.flags & FLAG_BOS:
                raise OggError("the first Ogg page is not a beginning-of-stream page")
            self.serial = header.serial
        elif header.serial != self.serial:
            raise OggError(f"a second logical stream (serial {header.serial:#x}): chained or multiplexed Ogg")
        if header.sequence != self._expect_sequence:
            raise OggError(f"Ogg page {self._expect_sequence} is missing (got page {header.sequence})")
        self._expect_sequence += 1
        self.pages += 1
        if header.flags & FLAG_EOS:
            self.eos = True
        if not header.flags & FLAG_CONTINUED and self._partial:
            raise OggError(f"Ogg page {header.sequence} drops a packet continued from the page before")
        ended: list[bytes] = []
        position = HEADER_BYTES + len(header.lacing)
        for value in header.lacing:
            self._partial += page[position : position + value]
            position += value
            if len(self._partial) > self.max_packet_bytes:
                raise OggError(f"an Ogg packet exceeds the {self.max_packet_bytes}-byte limit")
            if value < 255:
                ended.append(bytes(self._partial))
                self._partial.clear()
        out: list[OggPacket] = []
        for index, packet in enumerate(ended):
            if self.head is None:
                self.head = OpusHead.parse(packet)
            elif self.tags is None:
                self.tags = OpusTags.parse(packet)
            else:
                out.append(OggPacket(packet, header.granule, header.sequence, index == len(ended) - 1))
        if ended and header.granule >= 0:  # -1 marks a page on which no packet ends
            self.final_granule = header.granule
        return out


def read_ogg_opus(data: bytes) -> OggOpusStream:
    """Parse a whole Ogg Opus file held in memory."""
    reader = OggOpusReader()
    packets = reader.feed(data)
    reader.close()
    if reader.head is None or reader.tags is None or reader.serial is None:  # close() already rejected this
        raise OggError("incomplete Ogg Opus headers")
    return OggOpusStream(
        reader.head, reader.tags, packets, reader.serial, reader.pages, reader.final_granule, reader.eos
    )


__all__ = [
    "DEFAULT_PRE_SKIP",
    "PION_VENDOR",
    "OggError",
    "OggOpusReader",
    "OggOpusStream",
    "OggOpusWriter",
    "OggPacket",
    "OpusHead",
    "OpusTags",
    "build_page",
    "ogg_crc",
    "read_ogg_opus",
]
