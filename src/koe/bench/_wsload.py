"""A lean WebSocket load generator for the ACS relay benchmark: many simulated ACS media streams from one process.

A full client library costs more CPU per frame than the server under test, so this one speaks just enough RFC 6455
itself: a handshake per connection, pre-built text frames masked with the all-zero key (valid, and it makes masking
free), and a minimal parser for the server's unmasked replies. `run_load(url, streams, seconds)` streams 20 ms
`AudioData` frames at real-time pace from every stream (spread evenly over each 20 ms tick) to a server in echo mode
and returns the added latency of each echoed frame, matched by a sequence number carried in the audio itself.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from koe.protocols.acs import AudioMetadata, encode, iso_timestamp
from koe.tasks import within

FRAME_MS = 20
_AUDIO_BYTES = 640
_TAG_BYTES = 6  # connection id and sequence number, 3 bytes each, at the start of the audio
_FILL = base64.b64encode(bytes([7]) * (_AUDIO_BYTES - _TAG_BYTES)).decode()  # non-zero: not a silent frame
_DATA_MARK = b'"Data":"'


@dataclass
class LoadResult:
    streams: int
    sent: int = 0
    received: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    connect_failures: int = 0


def _frame(text: bytes) -> bytes:
    size = len(text)
    if size < 126:
        header = bytes([0x81, 0x80 | size])
    elif size < 65536:
        header = bytes([0x81, 0x80 | 126]) + struct.pack("!H", size)
    else:
        header = bytes([0x81, 0x80 | 127]) + struct.pack("!Q", size)
    return header + b"\x00\x00\x00\x00" + text  # mask key 0: the payload goes out as is


class _Stream(asyncio.Protocol):
    def __init__(self, index: int, result: LoadResult, sent_at: dict[int, float], warm: list[float]) -> None:
        self.index = index
        self.result = result
        self.sent_at = sent_at
        self.warm = warm
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._buffer = bytearray()
        self._handshaken = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if not self._handshaken:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(self._buffer[:end]).split(b"\r\n", 1)[0]
            del self._buffer[: end + 4]
            self._handshaken = True
            if b" 101 " not in status and not self.ready.done():
                self.ready.set_exception(ConnectionError(status.decode(errors="replace")))
                return
            if not self.ready.done():
                self.ready.set_result(None)
        self._parse()

    def _parse(self) -> None:
        buffer = self._buffer
        now = time.perf_counter()
        while len(buffer) >= 2:
            size = buffer[1] & 0x7F
            offset = 2
            if size == 126:
                if len(buffer) < 4:
                    return
                size = struct.unpack_from("!H", buffer, 2)[0]
                offset = 4
            elif size == 127:
                if len(buffer) < 10:
                    return
                size = struct.unpack_from("!Q", buffer, 2)[0]
                offset = 10
            if len(buffer) < offset + size:
                return
            payload = bytes(buffer[offset : offset + size])
            del buffer[: offset + size]
            mark = payload.find(_DATA_MARK)
            if mark < 0:
                continue
            start = mark + len(_DATA_MARK)
            tag = base64.b64decode(payload[start : start + 8])
            seq = int.from_bytes(tag[3:6], "big")
            sent = self.sent_at.pop(seq, None)
            if sent is not None:
                self.result.received += 1
                if sent >= self.warm[0]:
                    self.result.latencies_ms.append((now - sent) * 1000.0)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(str(exc)))


def _factory(protocol: _Stream) -> Callable[[], _Stream]:
    return lambda: protocol


async def run_load(url: str, streams: int, seconds: float, warmup_s: float = 1.0) -> LoadResult:
    """Stream `streams` real-time calls at an echo-mode server for `seconds` and measure the echo latency."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    loop = asyncio.get_running_loop()
    result = LoadResult(streams)
    warm = [0.0]  # set once every stream is connected; frames before it are not measured
    conns: list[_Stream] = []
    sent_maps: list[dict[int, float]] = []
    for index in range(streams):
        sent_at: dict[int, float] = {}
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {parts.path or '/'}{'?' + parts.query if parts.query else ''} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"x-ms-call-connection-id: bench-{index}\r\nx-ms-call-correlation-id: bench\r\n\r\n"
        )
        try:
            protocol = _Stream(index, result, sent_at, warm)
            _, stream = await loop.create_connection(_factory(protocol), host, port)
            assert stream.transport is not None
            stream.transport.write(request.encode())
            await within(stream.ready, 10)
            stream.transport.write(_frame(encode(AudioMetadata(f"bench-{index}", 16000)).encode()))
        except (OSError, ConnectionError, TimeoutError):
            result.connect_failures += 1
            continue
        conns.append(stream)
        sent_maps.append(sent_at)
    start = time.perf_counter() + 0.2
    warm[0] = start + warmup_s
    ticks = int(seconds * 1000 / FRAME_MS)
    stamps = [iso_timestamp(1_700_000_000 + tick * FRAME_MS / 1000) for tick in range(ticks)]
    slots = 20  # spread the streams over each 20 ms tick, as independent calls would be
    for tick in range(ticks):
        for slot in range(slots):
            due = start + tick * FRAME_MS / 1000 + slot * FRAME_MS / 1000 / slots
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            for position in range(slot, len(conns), slots):
                stream = conns[position]
                if stream.transport is None or stream.transport.is_closing():
                    continue
                tag = base64.b64encode(stream.index.to_bytes(3, "big") + tick.to_bytes(3, "big")).decode()
                text = (
                    '{"kind":"AudioData","audioData":{"timestamp":"' + stamps[tick] + '","data":"' + tag + _FILL
                    + '","silent":false}}'
                )  # fmt: skip
                sent_maps[position][tick] = time.perf_counter()
                stream.transport.write(_frame(text.encode()))
                result.sent += 1
    await asyncio.sleep(0.5)
    for stream in conns:
        if stream.transport is not None:
            stream.transport.write(b"\x88\x82\x00\x00\x00\x00\x03\xe8")  # close 1000
            stream.transport.close()
    return result
