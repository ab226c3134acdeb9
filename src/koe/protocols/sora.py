"""Sora audio streaming, the request side: the per-connection headers and the two body framings (sans-I/O).

Sora opens one HTTP/2 POST per WebRTC connection and streams that connection's Opus packets in the body. Call
`parse_request_headers()` on the request HEADERS, then make one reader with `packet_reader(framing)` and feed it
each DATA frame's payload with `feed()`; it returns the complete `Packet`s so far. Call `end()` at END_STREAM: it
raises `TruncatedPacket` when a header-framed packet was cut short.

- `raw` framing (Sora's `audio_streaming_header = false`): each non-empty DATA frame is exactly one Opus packet.
  Frames are never merged (the reference gateway merges buffered frames under load; see spec §2.8 #8).
- `header` framing (`audio_streaming_header = true`): each packet is prefixed by a 20-byte big-endian header
  `u64 timestamp | u64 sequence | u32 length`, and packets may be split across or packed into DATA frames.
  A length above `MAX_PAYLOAD_BYTES` raises `PayloadTooLarge`, whose message is the reference gateway's
  `PAYLOAD-TOO-LARGE: <n>`.

Errors are `SoraProtocolError`s; each is about one stream only, and a reader that raised is finished.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

Framing = Literal["raw", "header"]
FRAMINGS: tuple[Framing, ...] = ("raw", "header")

HEADER_BYTES = 20
"""`u64 timestamp | u64 sequence | u32 length`, big endian."""
MAX_PAYLOAD_BYTES = 0xFFFFFF
"""The largest length the reference gateway accepts (16 MiB - 1)."""
MAX_RAW_FRAME_BYTES = 1 << 20
"""A raw-framed packet is one DATA frame; koe's listener never accepts frames larger than this (1 MiB)."""
SILENT_PACKET = b"\xfc\xff\xfe"
"""What the gateway injects when Sora sends nothing for `time_to_wait_for_opus_packet_ms` (spec §2.3 C)."""

_HEADER = struct.Struct(">QQI")

HEADER_CHANNEL_ID = "sora-channel-id"
HEADER_SESSION_ID = "sora-session-id"
HEADER_CONNECTION_ID = "sora-connection-id"
HEADER_CLIENT_ID = "sora-client-id"
HEADER_LANGUAGE_CODE = "sora-audio-streaming-language-code"
MAX_HEADER_VALUE_CHARS = 255
"""Ids and language codes are short; a longer value is not from Sora."""


class SoraProtocolError(ValueError):
    """Input that breaks the Sora audio streaming contract. The message is safe to send back as a `reason`."""


class PayloadTooLarge(SoraProtocolError):
    def __init__(self, length: int) -> None:
        super().__init__(f"PAYLOAD-TOO-LARGE: {length}")
        self.length = length


class TruncatedPacket(SoraProtocolError):
    """The body ended inside a header-framed packet."""


class OversizeFrame(SoraProtocolError):
    """A raw-framed DATA frame larger than any packet could be."""


class MissingHeader(SoraProtocolError):
    def __init__(self, name: str) -> None:
        super().__init__(f"missing request header {name}")
        self.name = name


class InvalidHeader(SoraProtocolError):
    pass


@dataclass(frozen=True, slots=True)
class Packet:
    """One Opus packet as Sora forwarded it; `timestamp` (UNIX µs) and `sequence` only in header framing."""

    payload: bytes
    timestamp: int | None = None
    sequence: int | None = None
    injected: bool = False
    """True for a silent packet the gateway made up while Sora was idle."""


@dataclass(frozen=True, slots=True)
class SoraRequest:
    """The per-connection context Sora sends in the request headers."""

    channel_id: str
    session_id: str
    connection_id: str
    language_code: str
    client_id: str = ""


def parse_request_headers(headers: Iterable[tuple[str, str]] | Mapping[str, str]) -> SoraRequest:
    """Read Sora's headers (names case-insensitive). The language code is required; the ids default to ""."""
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    found: dict[str, str] = {}
    for name, value in pairs:
        key = name.lower()
        if key.startswith("sora-"):
            if len(value) > MAX_HEADER_VALUE_CHARS:
                raise InvalidHeader(f"request header {key} is longer than {MAX_HEADER_VALUE_CHARS} characters")
            found[key] = value
    language = found.get(HEADER_LANGUAGE_CODE, "").strip()
    if not language:
        raise MissingHeader(HEADER_LANGUAGE_CODE)
    return SoraRequest(
        channel_id=found.get(HEADER_CHANNEL_ID, ""),
        session_id=found.get(HEADER_SESSION_ID, ""),
        connection_id=found.get(HEADER_CONNECTION_ID, ""),
        language_code=language,
        client_id=found.get(HEADER_CLIENT_ID, ""),
    )


def request_headers(request: SoraRequest) -> list[tuple[str, str]]:
    """The headers Sora sends for `request`, in Sora's order (for the simulator)."""
    headers = [
        (HEADER_CHANNEL_ID, request.channel_id),
        (HEADER_SESSION_ID, request.session_id),
    ]
    if request.client_id:
        headers.append((HEADER_CLIENT_ID, request.client_id))
    headers.append((HEADER_CONNECTION_ID, request.connection_id))
    if request.language_code:
        headers.append((HEADER_LANGUAGE_CODE, request.language_code))
    return headers


def frame_packet(payload: bytes, timestamp: int = 0, sequence: int = 0) -> bytes:
    """One header-framed packet: the 20-byte header then the payload."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise PayloadTooLarge(len(payload))
    return _HEADER.pack(timestamp, sequence, len(payload)) + payload


class RawPacketReader:
    """`raw` framing: one non-empty DATA frame is one packet; empty frames are ignored."""

    framing: Framing = "raw"

    def feed(self, frame: bytes) -> list[Packet]:
        if not frame:
            return []
        if len(frame) > MAX_RAW_FRAME_BYTES:
            raise OversizeFrame(f"a {len(frame)}-byte DATA frame is larger than {MAX_RAW_FRAME_BYTES} bytes")
        return [Packet(bytes(frame))]

    def end(self) -> None:
        """Nothing can be left over in raw framing."""

    @property
    def pending_bytes(self) -> int:
        return 0


class HeaderPacketReader:
    """`header` framing: reassembles 20-byte-header packets across DATA frame boundaries."""

    framing: Framing = "header"

    def __init__(self, max_payload_bytes: int = MAX_PAYLOAD_BYTES) -> None:
        self.max_payload_bytes = max_payload_bytes
        self._buffer = bytearray()
        self._header: tuple[int, int, int] | None = None

    @property
    def pending_bytes(self) -> int:
        return len(self._buffer) + (HEADER_BYTES if self._header else 0)

    def feed(self, data: bytes) -> list[Packet]:
        if not self._buffer and self._header is None and len(data) >= HEADER_BYTES:
            # What Sora sends: exactly one whole packet per DATA frame.
            timestamp, sequence, length = _HEADER.unpack_from(data)
            if HEADER_BYTES + length == len(data):
                self._check(length)
                return [Packet(data[HEADER_BYTES:], timestamp, sequence)]
        packets: list[Packet] = []
        view = memoryview(data)
        pos = 0
        # Whole packets in this frame and nothing pending.
        while not self._buffer and self._header is None and len(view) - pos >= HEADER_BYTES:
            timestamp, sequence, length = _HEADER.unpack_from(view, pos)
            self._check(length)
            end = pos + HEADER_BYTES + length
            if end > len(view):
                self._header = (timestamp, sequence, length)
                pos += HEADER_BYTES
                break
            packets.append(Packet(bytes(view[pos + HEADER_BYTES : end]), timestamp, sequence))
            pos = end
        if pos < len(view):
            self._buffer += view[pos:]
            packets.extend(self._drain())
        return packets

    def _drain(self) -> list[Packet]:
        packets: list[Packet] = []
        while True:
            if self._header is None:
                if len(self._buffer) < HEADER_BYTES:
                    return packets
                header: tuple[int, int, int] = _HEADER.unpack_from(self._buffer, 0)
                del self._buffer[:HEADER_BYTES]
                self._check(header[2])
                self._header = header
            timestamp, sequence, length = self._header
            if len(self._buffer) < length:
                return packets
            packets.append(Packet(bytes(self._buffer[:length]), timestamp, sequence))
            del self._buffer[:length]
            self._header = None

    def _check(self, length: int) -> None:
        if length > self.max_payload_bytes:
            self._buffer.clear()
            raise PayloadTooLarge(length)

    def end(self) -> None:
        if self._header is not None or self._buffer:
            have = len(self._buffer)
            if self._header is None:
                raise TruncatedPacket(f"the body ended inside a packet header ({have} of {HEADER_BYTES} bytes)")
            raise TruncatedPacket(f"the body ended inside a packet ({have} of {self._header[2]} payload bytes)")


PacketReader = RawPacketReader | HeaderPacketReader


def packet_reader(framing: Framing) -> PacketReader:
    if framing == "raw":
        return RawPacketReader()
    if framing == "header":
        return HeaderPacketReader()
    raise ValueError(f"unknown framing {framing!r}; expected one of {FRAMINGS}")
