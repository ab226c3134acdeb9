"""Ogg pages and the two Opus header packets, as bytes: the building blocks of `koe.audio.ogg`.

`build_page()` frames whole packets into one page with its CRC; `parse_page_header()` reads a page header back.
`OpusHead` and `OpusTags` convert the RFC 7845 §5 headers to and from bytes. Import from `koe.audio.ogg` instead.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

from koe.audio.opus import OPUS_RATE

CAPTURE = b"OggS"
FLAG_CONTINUED = 0x01
FLAG_BOS = 0x02
FLAG_EOS = 0x04
HEADER_BYTES = 27
MAX_SEGMENTS = 255
MAX_PAGE_BYTES = HEADER_BYTES + MAX_SEGMENTS + MAX_SEGMENTS * 255
MAX_PACKET_BYTES = MAX_SEGMENTS * 255 - 1
"""Largest packet that fits one page. The largest valid Opus packet (120 ms of 2.5 ms frames) is 61,440 bytes."""
DEFAULT_PRE_SKIP = 312
"""libopus's encoder lookahead at 48 kHz, which is what libavformat writes."""
PION_VENDOR = b"pion\x00"
"""pion's oggwriter declares a 5-byte vendor string: "pion" and a NUL."""

_PAGE_HEADER = struct.Struct("<4sBBqIIIB")
"""capture pattern, version, flags, granule position, serial, page sequence, CRC, segment count (RFC 3533 §6)."""
_OPUS_HEAD = struct.Struct("<8sBBHIhB")
_CRC_POLY = 0x04C11DB7


class OggError(ValueError):
    """Bytes that are not a valid single-stream Ogg Opus file; the message says what is wrong and where."""


def _crc_table() -> tuple[int, ...]:
    table = []
    for index in range(256):
        crc = index << 24
        for _ in range(8):
            crc = ((crc << 1) ^ _CRC_POLY) if crc & 0x80000000 else (crc << 1)
        table.append(crc & 0xFFFFFFFF)
    return tuple(table)


_CRC_TABLE = _crc_table()


def ogg_crc(data: bytes | bytearray | memoryview) -> int:
    """Ogg's CRC-32: polynomial 0x04C11DB7, initial value 0, not reflected, no final XOR."""
    crc = 0
    table = _CRC_TABLE
    for byte in bytes(data):
        crc = ((crc << 8) & 0xFFFFFFFF) ^ table[(crc >> 24) ^ byte]
    return crc


def _lacing(size: int) -> bytes:
    return b"\xff" * (size // 255) + bytes((size % 255,))


def build_page(flags: int, granule: int, serial: int, sequence: int, packets: Iterable[bytes]) -> bytes:
    """One page holding whole `packets` (each must end on this page), CRC filled in."""
    parts = list(packets)
    lacing = b"".join(_lacing(len(packet)) for packet in parts)
    if len(lacing) > MAX_SEGMENTS:
        raise OggError(f"{len(parts)} packets need {len(lacing)} lacing values; a page holds {MAX_SEGMENTS}")
    header = _PAGE_HEADER.pack(CAPTURE, 0, flags, granule, serial, sequence, 0, len(lacing))
    page = bytearray(header + lacing + b"".join(parts))
    struct.pack_into("<I", page, 22, ogg_crc(page))
    return bytes(page)


@dataclass(frozen=True, slots=True)
class PageHeader:
    flags: int
    granule: int
    serial: int
    sequence: int
    crc: int
    lacing: bytes

    @property
    def size(self) -> int:
        """Bytes of the whole page: header, lacing values and body."""
        return HEADER_BYTES + len(self.lacing) + sum(self.lacing)


def parse_page_header(data: bytes | bytearray, offset: int = 0) -> PageHeader | None:
    """The page header at `offset`, or None when `data` does not hold all of it yet."""
    if len(data) - offset < HEADER_BYTES:
        return None
    capture, version, flags, granule, serial, sequence, crc, count = _PAGE_HEADER.unpack_from(data, offset)
    if capture != CAPTURE:
        raise OggError(f"no Ogg page at byte {offset} (found {bytes(capture)!r}): not an Ogg stream or corrupt")
    if version != 0:
        raise OggError(f"unsupported Ogg stream structure version {version} at byte {offset}")
    if len(data) - offset < HEADER_BYTES + count:
        return None
    return PageHeader(
        flags, granule, serial, sequence, crc, bytes(data[offset + HEADER_BYTES : offset + HEADER_BYTES + count])
    )


@dataclass(frozen=True, slots=True)
class OpusHead:
    """The identification header (RFC 7845 §5.1)."""

    channels: int = 1
    pre_skip: int = DEFAULT_PRE_SKIP
    input_rate: int = OPUS_RATE
    output_gain: int = 0
    """Q7.8 dB."""
    mapping_family: int = 0
    version: int = 1

    def to_bytes(self) -> bytes:
        if self.mapping_family != 0:
            raise OggError("only channel mapping family 0 (mono or stereo) is supported")
        return _OPUS_HEAD.pack(
            b"OpusHead", self.version, self.channels, self.pre_skip, self.input_rate, self.output_gain, 0
        )

    @classmethod
    def parse(cls, packet: bytes) -> OpusHead:
        if len(packet) < _OPUS_HEAD.size or not packet.startswith(b"OpusHead"):
            raise OggError("the first packet is not an OpusHead header: not an Ogg Opus stream")
        _magic, version, channels, pre_skip, rate, gain, family = _OPUS_HEAD.unpack_from(packet)
        if version >> 4 != 0:  # RFC 7845 §5.1: the major version is the high nibble; only 0 is defined
            raise OggError(f"unsupported OpusHead version {version}")
        if channels == 0:
            raise OggError("OpusHead declares zero channels")
        return cls(channels, pre_skip, rate, gain, family, version)


@dataclass(frozen=True, slots=True)
class OpusTags:
    """The comment header (RFC 7845 §5.2). `vendor` keeps any NUL the writer put in it (pion writes one)."""

    vendor: str = "koe"
    comments: tuple[str, ...] = ()

    def to_bytes(self, vendor: bytes | None = None) -> bytes:
        raw_vendor = vendor if vendor is not None else self.vendor.encode("utf-8")
        out = [b"OpusTags", struct.pack("<I", len(raw_vendor)), raw_vendor, struct.pack("<I", len(self.comments))]
        for comment in self.comments:
            raw = comment.encode("utf-8")
            out += [struct.pack("<I", len(raw)), raw]
        return b"".join(out)

    @classmethod
    def parse(cls, packet: bytes) -> OpusTags:
        if not packet.startswith(b"OpusTags"):
            raise OggError("the second packet is not an OpusTags header")
        try:
            (length,) = struct.unpack_from("<I", packet, 8)
            vendor = packet[12 : 12 + length]
            offset = 12 + length
            (count,) = struct.unpack_from("<I", packet, offset)
            offset += 4
            comments: list[str] = []
            for _ in range(count):
                (size,) = struct.unpack_from("<I", packet, offset)
                comments.append(packet[offset + 4 : offset + 4 + size].decode("utf-8", "replace"))
                offset += 4 + size
        except struct.error as exc:
            raise OggError(f"truncated OpusTags header: {exc}") from exc
        if len(vendor) != length or offset > len(packet):
            raise OggError("truncated OpusTags header")
        return cls(vendor.decode("utf-8", "replace"), tuple(comments))
