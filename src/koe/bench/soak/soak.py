"""The soak of `koe bench soak`: real speech on Sora transcription streams for a long time, in time windows.

Call `run_soak(duration_s, streams, windows, progress)`. The Sora gateway (service `koe`, VAD and STT warmed) runs in
a child process (`benchserve sora`), as in `koe bench sora`. `streams` workers each stream the fixture utterances at
real-time pace, each followed by as much silence, over and over; every `CYCLES_PER_REQUEST` utterances a worker ends
its `POST /speech` and opens a new one on a new connection, so connections come and go as calls do. A final result's
latency is the time from sending the packet holding its `end_ms` to receiving the result (as `koe bench sora`
measures it). The child's RSS is read from `/proc` every `RSS_EVERY_S`.

The run is cut into `windows` equal time windows: each has its final results' p50/p95 latency and its median RSS.
The first `warmup_windows` are left out of the comparison; of the rest, the first quarter is compared with the last
quarter (median of the windows' p95, median RSS): flat when the last is at most `FLAT_FRACTION` above the first.
"""

from __future__ import annotations

import asyncio
import math
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from koe.audio.opus import OPUS_RATE, OpusEncoder
from koe.bench._child import Child
from koe.bench.fixtures import AUDIO
from koe.bench.soak._proc import rss_mb, within
from koe.protocols.sora import SoraRequest, frame_packet, request_headers
from koe.sim.sora.gateway_client import GatewayConnection, GatewayStream
from koe.sim.sora.source import opus_packets

Progress = Callable[[str], None]
SPEECH_FILES = ("utterance_48k.wav", "short_16k.wav", "reply_48k_opus.ogg")
PACKET_S = 0.02
CYCLES_PER_REQUEST = 4
RSS_EVERY_S = 2.0
FLAT_FRACTION = 0.10
STREAM_END_S = 30.0
"""How long a stream's last results may take after its end of stream."""


class _Cycles:
    """Each fixture's Opus packets, and as many packets of silence, encoded once and shared by every worker."""

    def __init__(self) -> None:
        quiet = OpusEncoder(OPUS_RATE)
        self.speech = [opus_packets(AUDIO / name, trailing_silence_ms=0) for name in SPEECH_FILES]
        self.silence = [quiet.encode(np.zeros(len(packets) * 960, dtype=np.int16)) for packets in self.speech]

    def plan(self, first: int, count: int) -> list[bytes]:
        packets: list[bytes] = []
        for cycle in range(first, first + count):
            which = cycle % len(self.speech)
            packets += self.speech[which] + self.silence[which]
        return packets


async def _worker(
    port: int, index: int, cycles: _Cycles, deadline: float, began: float, finals: list[tuple[float, float]]
) -> int:
    """Stream until `deadline` (perf_counter); each final result as (seconds since `began`, latency s)."""
    await asyncio.sleep(random.Random(index).uniform(0, 4))  # staggered, as independent calls
    request_no = 0
    errors = 0
    while time.perf_counter() < deadline:
        plan = cycles.plan(index + request_no * CYCLES_PER_REQUEST, CYCLES_PER_REQUEST)
        request = SoraRequest("soak", "S", f"C{index}-{request_no}", "en-US")
        request_no += 1
        errors += await _request(port, request, plan, deadline, began, finals)
    return errors


async def _request(
    port: int, request: SoraRequest, plan: list[bytes], deadline: float, began: float, finals: list[tuple[float, float]]
) -> int:
    """One `POST /speech` streaming `plan` in real time; 1 when it failed, else 0."""
    loop = asyncio.get_running_loop()
    sent_at: list[float] = []

    async def collect(stream: GatewayStream) -> None:
        while (result := await stream.results.get()) is not None:
            if isinstance(result, dict) and result.get("is_final") and sent_at:
                received = time.perf_counter()
                at_end = min(len(sent_at) - 1, max(0, math.ceil(result["end_ms"] / 20) - 1))
                finals.append((received - began, received - sent_at[at_end]))

    conn = await GatewayConnection.connect(f"http://127.0.0.1:{port}")
    failed = 0
    try:
        stream = await conn.open_stream("/speech", request_headers(request))
        collector = asyncio.create_task(collect(stream))
        start = loop.time()
        for i, packet in enumerate(plan):
            if time.perf_counter() >= deadline:
                break
            delay = start + i * PACKET_S - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            sent_at.append(time.perf_counter())
            if not await stream.send(frame_packet(packet, int(time.time() * 1e6), i)):
                break
        await stream.end()
        await stream.closed(STREAM_END_S)
        await collector
        failed = int(stream.error is not None or stream.status != 200)
    except (OSError, TimeoutError):
        failed = 1
    finally:
        await conn.close()
    return failed


async def _sample_rss(pid: int, began: float, until: float, into: list[tuple[float, float]]) -> None:
    while time.perf_counter() < until:
        into.append((time.perf_counter() - began, round(rss_mb(pid), 1)))
        await asyncio.sleep(RSS_EVERY_S)


def _percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


def _windows(
    duration_s: float, windows: int, finals: list[tuple[float, float]], rss: list[tuple[float, float]]
) -> list[dict[str, Any]]:
    width = duration_s / windows
    rows = []
    for w in range(windows):
        # The last window also holds the results that came after the end (the streams' last turns).
        lo, hi = w * width, (w + 1) * width if w < windows - 1 else math.inf
        latencies = [latency for at, latency in finals if lo <= at < hi]
        memory = [mb for at, mb in rss if lo <= at < hi]
        rows.append(
            {
                "start_s": round(lo, 1),
                "end_s": round((w + 1) * width, 1),
                "final_results": len(latencies),
                "latency_p50_s": _percentile(latencies, 50),
                "latency_p95_s": _percentile(latencies, 95),
                "rss_mb": round(statistics.median(memory), 1) if memory else None,
            }
        )
    return rows


def _compare(rows: list[dict[str, Any]], key: str, warmup_windows: int) -> dict[str, Any]:
    measured = [row[key] for row in rows[warmup_windows:] if row[key] is not None]
    if not measured:
        return {"first": None, "last": None, "growth_pct": None, "flat_within_10pct": None}
    span = max(1, len(measured) // 4)
    first, last = statistics.median(measured[:span]), statistics.median(measured[-span:])
    return {
        "first": round(first, 3),
        "last": round(last, 3),
        "growth_pct": round((last - first) / first * 100, 2) if first else None,
        "flat_within_10pct": within(first, last, FLAT_FRACTION),
        "windows_compared": span,
    }


async def _soak(child: Child, duration_s: float, streams: int, progress: Progress) -> dict[str, Any]:
    cycles = _Cycles()
    began = time.perf_counter()
    deadline = began + duration_s
    finals: list[tuple[float, float]] = []
    rss: list[tuple[float, float]] = []
    sampler = asyncio.create_task(_sample_rss(child.process.pid, began, deadline, rss))

    async def report() -> None:
        while time.perf_counter() < deadline:
            await asyncio.sleep(min(60.0, max(5.0, duration_s / 10)))
            progress(f"soak: {time.perf_counter() - began:.0f} s, {len(finals)} finals, RSS {rss[-1][1]} MiB")

    reporter = asyncio.create_task(report())
    errors = await asyncio.gather(*(_worker(child.port, i, cycles, deadline, began, finals) for i in range(streams)))
    reporter.cancel()
    await sampler
    return {"finals": finals, "rss": rss, "errors": sum(errors), "seconds": round(time.perf_counter() - began, 1)}


def run_soak(
    duration_s: float, streams: int, windows: int, progress: Progress, warmup_windows: int = 1
) -> dict[str, Any]:
    child = Child("sora", "koe", "{port}", str(AUDIO / SPEECH_FILES[1]))
    try:
        rss_start = round(rss_mb(child.process.pid), 1)
        raw = asyncio.run(_soak(child, duration_s, streams, progress))
    finally:
        child.stop()
    rows = _windows(duration_s, windows, raw["finals"], raw["rss"])
    latencies = [latency for _, latency in raw["finals"]]
    return {
        "duration_s": duration_s,
        "streams": streams,
        "windows": windows,
        "warmup_windows": warmup_windows,
        "seconds": raw["seconds"],
        "final_results": len(latencies),
        "errors": raw["errors"],
        "rss_mb_at_start": rss_start,
        "latency_p50_s": _percentile(latencies, 50),
        "latency_p95_s": _percentile(latencies, 95),
        "latency_p95": _compare(rows, "latency_p95_s", warmup_windows),
        "rss": _compare(rows, "rss_mb", warmup_windows),
        "per_window": rows,
        "rss_samples": [[at, mb] for at, mb in raw["rss"]],
    }


def default_streams(results: Path, fallback: int = 4) -> int:
    """The transcription capacity `koe bench sora` measured (`speech.max_connections_p95_le_1s`), if it ran here."""
    import orjson

    try:
        measured = orjson.loads(results.read_bytes())["speech"]["max_connections_p95_le_1s"]
    except (OSError, KeyError, TypeError, orjson.JSONDecodeError):
        return fallback
    return int(measured) or fallback
