"""A lean HTTP/2 load generator for `koe bench sora`: many Sora streams at 50 packets/s each, cheap per packet.

`await run_load(port, streams, seconds, …)` opens `ceil(streams / STREAMS_PER_CONNECTION)` h2c connections, starts
one `POST /test` per stream (headers encoded with `hpack`), then every 20 ms sends each stream one header-framed
packet, spread evenly across the 20 ms, and times each result line against the packet that caused it. It builds
DATA frames with `struct` rather than through `h2` because the generator must outrun the gateway on the other core;
frames it receives are only scanned for DATA, SETTINGS and PING. Not a test client: the tests use `h2` and httpx.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections import deque
from dataclasses import dataclass, field

import hpack

from koe.protocols.sora import frame_packet

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
STREAMS_PER_CONNECTION = 200
"""Below the gateway's MAX_CONCURRENT_STREAMS (250)."""
PACKET_MS = 20
SLOTS = 10
"""Each 20 ms tick is split into this many slots, so packets from different streams do not all arrive at once."""
PAYLOAD = bytes([0x78]) + bytes(79)
"""An 80-byte Opus-sized payload (the test service only counts bytes)."""
_FRAME = struct.Struct(">I B I")  # 24-bit length in the top of the int, then type and flags, then the stream id
_WINDOW_MAX = 2**31 - 1
_HEADER = struct.Struct(">HBBBI")
DRAIN_S = 10.0
DRAIN_POLL_S = 0.05


def _frame(kind: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream_id) + payload


@dataclass
class LoadResult:
    streams: int
    seconds: float
    packets_sent: int = 0
    results: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    late_ticks: int = 0
    """Ticks the generator itself started more than one slot late (then its own timing is suspect)."""
    blocked: int = 0
    """Packets not sent because the gateway's flow-control window was used up: it is not keeping up."""


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, result: LoadResult) -> None:
        self.reader = reader
        self.writer = writer
        self.result = result
        self.pending: dict[int, deque[float]] = {}
        self.measure_from = float("inf")
        self.window = 65535
        """The gateway's connection-level receive window for us: never send past it (that is a FLOW_CONTROL_ERROR)."""

    async def read_loop(self) -> None:
        buffer = b""
        while True:
            data = await self.reader.read(1 << 16)
            if not data:
                return
            now = time.perf_counter()
            buffer += data
            pos = 0
            size = len(buffer)
            while size - pos >= 9:
                high, low, kind, flags, stream_id = _HEADER.unpack_from(buffer, pos)
                length = high << 8 | low
                if size - pos < 9 + length:
                    break
                start = pos + 9
                pos = start + length
                if kind == 0 and length:
                    self._results(stream_id & 0x7FFFFFFF, buffer.count(b"\n", start, pos), now)
                    continue
                payload = buffer[start:pos]
                if kind == 4 and not flags & 1:
                    self.writer.write(_frame(4, 1, 0, b""))  # SETTINGS ACK
                elif kind == 6 and not flags & 1:
                    self.writer.write(_frame(6, 1, 0, payload))  # PING ACK
                elif kind == 8 and stream_id == 0:
                    self.window += int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
                elif kind in (3, 7):  # RST_STREAM, GOAWAY
                    self.result.errors += 1
            buffer = buffer[pos:]

    def _results(self, stream_id: int, count: int, now: float) -> None:
        queue = self.pending.get(stream_id)
        for _ in range(count):
            if not queue:
                self.result.errors += 1
                return
            sent = queue.popleft()
            self.result.results += 1
            if sent >= self.measure_from:
                self.result.latencies_ms.append((now - sent) * 1000)


async def run_load(port: int, streams: int, seconds: float, warmup_s: float = 2.0) -> LoadResult:
    result = LoadResult(streams, seconds)
    conns: list[_Conn] = []
    stream_ids: list[tuple[_Conn, int]] = []
    for first in range(0, streams, STREAMS_PER_CONNECTION):
        encoder = hpack.Encoder()  # HPACK state belongs to one connection
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        conn = _Conn(reader, writer, result)
        conns.append(conn)
        # SETTINGS: INITIAL_WINDOW_SIZE = max, so results never wait for our WINDOW_UPDATEs; then the same for the
        # connection window.
        settings = struct.pack(">HI", 4, _WINDOW_MAX)
        out = PREFACE + _frame(4, 0, 0, settings) + _frame(8, 0, 0, struct.pack(">I", _WINDOW_MAX - 65535))
        for i in range(min(STREAMS_PER_CONNECTION, streams - first)):
            stream_id = 1 + 2 * i
            headers = [
                (":method", "POST"), (":scheme", "http"), (":authority", f"127.0.0.1:{port}"), (":path", "/test"),
                ("sora-channel-id", "bench"), ("sora-connection-id", f"C{first + i}"),
                ("sora-audio-streaming-language-code", "ja-JP"),
            ]  # fmt: skip
            out += _frame(1, 0x4, stream_id, encoder.encode(headers))
            conn.pending[stream_id] = deque()
            stream_ids.append((conn, stream_id))
        writer.write(out)
        await writer.drain()
    readers = [asyncio.get_running_loop().create_task(c.read_loop()) for c in conns]
    for _ in range(int(2.0 / DRAIN_POLL_S)):  # the gateway's connection WINDOW_UPDATE, as a real client waits for
        if all(conn.window > 65535 for conn in conns):
            break
        await asyncio.sleep(DRAIN_POLL_S)
    # Every packet has the same length, so each stream's DATA frame header is fixed: built once.
    body_size = len(frame_packet(PAYLOAD))
    framed = [(conn, sid, _frame(0, 0, sid, bytes(body_size))[:9]) for conn, sid in stream_ids]
    slots: list[list[tuple[_Conn, int, bytes]]] = [framed[i::SLOTS] for i in range(SLOTS)]
    slot_s = PACKET_MS / 1000 / SLOTS
    start = time.perf_counter()
    for conn in conns:
        conn.measure_from = start + warmup_s
    end = start + warmup_s + seconds
    tick = 0
    sequence = 0
    while True:
        for index, slot in enumerate(slots):
            due = start + tick * PACKET_MS / 1000 + index * slot_s
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -slot_s:
                result.late_ticks += 1
            now = time.perf_counter()
            batches: dict[_Conn, list[bytes]] = {}
            body = frame_packet(PAYLOAD, int(time.time() * 1e6), sequence)
            size = len(body)
            for conn, stream_id, prefix in slot:
                if conn.window < size:
                    result.blocked += 1
                    continue
                conn.window -= size
                batches.setdefault(conn, []).extend((prefix, body))
                conn.pending[stream_id].append(now)
                result.packets_sent += 1
            for conn, frames in batches.items():
                conn.writer.write(b"".join(frames))
        tick += 1
        sequence += 1
        if time.perf_counter() >= end:
            break
    # Late results still count (their latency shows it); only the ones that never come are lost.
    for _ in range(int(DRAIN_S / DRAIN_POLL_S)):
        if result.results + result.errors >= result.packets_sent:
            break
        await asyncio.sleep(DRAIN_POLL_S)  # polling counters the reader tasks update
    for conn in conns:
        conn.writer.close()
    for task in readers:
        task.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    return result
