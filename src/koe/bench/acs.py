"""`koe bench acs`: how many ACS calls the door carries on this machine, and where the CPU goes.

The server runs in a child process (`koe.bench._child`: `python -m koe.server.benchserve acs …`) so the load
does not share its event loop.

- **relay** (AI off: parse, route, answer): the door in echo mode, pinned to one core, with the lean generator
  (`koe.bench._wsload`) on the other. N streams at 50 frames/s each; added latency is frame sent → its echo
  received. N rises while p99 ≤ 10 ms and nothing is lost. Measured for each WebSocket stack (the main port's
  Hypercorn/wsproto, uvicorn with websockets, uvicorn with wsproto, and koe's own ACS media listener on picows,
  `koe.server.acs.listener`), with the server's CPU seconds per frame, a cProfile of the server at one load, and
  per-frame costs of the JSON libraries.
- **transcribe**: N real-time calls (the fixture sentences, each followed by as much silence, so speech about half
  the time) in transcribe mode, on both cores, with partial results (the default) and with finals only. Latency is
  the media time at which `transcript.completed` arrives minus the turn's end (`audio_end_ms`, which includes the
  end-of-turn silence); the simulator sends each 20 ms frame at its start, so up to 20 ms of it can be negative.
  N rises while p95 ≤ 1 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import io
import json
import os
import platform
import pstats
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import numpy as np

from koe.bench._child import Child
from koe.bench.fixtures import AUDIO

RELAY_P99_MS = 10.0
TRANSCRIBE_P95_MS = 1000.0
STACKS = ("hypercorn", "uvicorn-websockets", "uvicorn-wsproto", "picows", "picows-bare")


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


# --- relay ----------------------------------------------------------------------------------------------------


async def _relay_level(child: Child, streams: int, seconds: float) -> dict[str, Any]:
    from koe.bench._wsload import run_load

    before = child.cpu_s()
    started = time.monotonic()
    result = await run_load(f"ws://127.0.0.1:{child.port}/acs/media?mode=echo", streams, seconds)
    cpu_s = child.cpu_s() - before
    cpu = cpu_s / (time.monotonic() - started)
    lat = result.latencies_ms
    return {
        "streams": streams,
        "sent": result.sent,
        "lost": result.sent - result.received,
        "connect_failures": result.connect_failures,
        "p50_ms": round(_percentile(lat, 50), 2),
        "p99_ms": round(_percentile(lat, 99), 2),
        "max_ms": round(max(lat), 2) if lat else None,
        "server_cpu": round(cpu, 2),
        # CPU per frame received and echoed (connection setup included): less sensitive to other load than latency.
        "server_us_per_frame": round(cpu_s / max(result.sent, 1) * 1e6, 1),
        "streams_per_core_at_full_cpu": round(1e6 / max(cpu_s / max(result.sent, 1) * 1e6, 1e-3) / 50),
    }


async def _relay(stack: str, levels: list[int], seconds: float, say: Callable[[str], None]) -> dict[str, Any]:
    os.sched_setaffinity(0, {1})
    rows = []
    capacity = 0
    for streams in levels:
        child = Child("acs", stack, "{port}", "echo", cpu=0)
        try:
            row = await _relay_level(child, streams, seconds)
        finally:
            child.stop()
        rows.append(row)
        say(f"relay {stack}: {streams} streams p99 {row['p99_ms']} ms, lost {row['lost']}, cpu {row['server_cpu']}")
        ok = row["p99_ms"] <= RELAY_P99_MS and row["lost"] == 0 and row["connect_failures"] == 0
        if not ok:
            break
        capacity = streams
    return {"levels": rows, "capacity_streams_per_core": capacity}


async def _relay_profile(streams: int, seconds: float, path: Path) -> list[dict[str, Any]]:
    child = Child("acs", "hypercorn", "{port}", "echo", str(path), cpu=0)
    try:
        await _relay_level(child, streams, seconds)
    finally:
        child.stop()
    stats = pstats.Stats(str(path), stream=io.StringIO())
    total = sum(entry[2] for entry in stats.stats.values())  # type: ignore[attr-defined]
    by_file: dict[str, float] = {}
    for (filename, _line, _name), entry in stats.stats.items():  # type: ignore[attr-defined]
        key = _area(filename)
        by_file[key] = by_file.get(key, 0.0) + entry[2]
    return [
        {"area": area, "share": round(spent / total, 3)}
        for area, spent in sorted(by_file.items(), key=lambda item: -item[1])[:12]
    ]


def _area(filename: str) -> str:
    for marker in ("site-packages/", "/koe/", "python3.11/"):
        if marker in filename:
            tail = filename.split(marker, 1)[1]
            return ("koe/" if marker == "/koe/" else "") + "/".join(tail.split("/")[:2])
    return filename.rsplit("/", 1)[-1]


def json_costs(repeat: int = 20000) -> dict[str, float]:
    """Per-frame µs to parse an inbound AudioData and to build an outbound one, with json and with orjson."""
    import base64

    import orjson

    from koe.protocols import acs_outbound
    from koe.protocols.acs import AudioData, InboundStream, encode

    frame = encode(AudioData(bytes(range(256)) * 2 + bytes(128), "2024-11-15T19:16:12.925Z"))
    pcm = bytes(640)

    def timed(fn: Callable[[], object]) -> float:
        begin = time.perf_counter()
        for _ in range(repeat):
            fn()
        return round((time.perf_counter() - begin) / repeat * 1e6, 2)

    stream = InboundStream(require_metadata_first=False)
    return {
        "parse_json_us": timed(lambda: json.loads(frame)),
        "parse_orjson_us": timed(lambda: orjson.loads(frame)),
        "inbound_stream_receive_us": timed(lambda: stream.receive(frame)),
        "build_json_dumps_us": timed(
            lambda: json.dumps({"Kind": "AudioData", "AudioData": {"Data": base64.b64encode(pcm).decode()}})
        ),
        "build_orjson_us": timed(
            lambda: orjson.dumps({"Kind": "AudioData", "AudioData": {"Data": base64.b64encode(pcm).decode()}})
        ),
        # what the writer does per chunk: the typed message, then its encoder's concatenation
        "build_concat_us": timed(lambda: acs_outbound.encode(acs_outbound.OutboundAudioData(pcm))),
    }


# --- transcribe -------------------------------------------------------------------------------------------------


async def _transcribe_level(child: Child, calls: int, seconds: float) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    from koe.sim.acs.media import MediaOptions, MediaStream

    streams = {f"bench-{calls}-{i}": MediaStream(MediaOptions(
        f"ws://127.0.0.1:{child.port}/acs/media", 16000, call_connection_id=f"bench-{calls}-{i}", bidirectional=False
    ), _call_audio(seconds, i)) for i in range(calls)}  # fmt: skip
    latencies: list[float] = []
    async with connect(f"ws://127.0.0.1:{child.port}/v1/calls/*/events", max_size=None) as results:

        async def collect() -> None:
            async for message in results:
                event = json.loads(message)
                stream = streams.get(event.get("call_id", ""))
                if stream is not None and event.get("type") == "transcript.completed":
                    latencies.append(stream.media_ms() - float(event["audio_end_ms"]))

        collector = asyncio.create_task(collect())
        tasks = []
        for stream in streams.values():
            tasks.append(asyncio.create_task(stream.run()))
            await asyncio.sleep(1.0 / max(calls, 1))
        await asyncio.gather(*tasks)
        await asyncio.sleep(2.0)
        collector.cancel()
    return {
        "calls": calls,
        "finals": len(latencies),
        "p50_ms": round(_percentile(latencies, 50), 1),
        "p95_ms": round(_percentile(latencies, 95), 1),
        "max_ms": round(max(latencies), 1) if latencies else None,
    }


def _call_audio(seconds: float, offset: int) -> Any:
    from koe.audio.files import read_audio
    from koe.sim.acs.participants import CallAudio, Participant, phone_raw_id

    names = ["short", "utterance", "reply"]
    speech = [read_audio(AUDIO / f"{names[(offset + k) % 3]}_16k.wav", 16000) for k in range(3)]
    pieces, at = [], 0
    while at < seconds * 16000:
        for pcm in speech:
            pieces.append(pcm)
            pieces.append(np.zeros(pcm.size, dtype=np.int16))  # as much silence as speech
            at += 2 * pcm.size
    track = np.concatenate(pieces)[: int(seconds * 16000)]
    return CallAudio([Participant(phone_raw_id(offset + 1), track)], 16000, tail_ms=1000)


async def _transcribe(
    levels: list[int], seconds: float, say: Callable[[str], None], partials: bool = True
) -> dict[str, Any]:
    rows = []
    capacity = 0
    for calls in levels:
        child = Child(
            "acs", "hypercorn", "{port}", "transcribe", env={"KOE_ACS__PARTIAL_RESULTS": str(partials).lower()}
        )
        try:
            row = await _transcribe_level(child, calls, seconds)
        finally:
            child.stop()
        rows.append(row)
        say(f"transcribe (partials {partials}): {calls} calls p95 {row['p95_ms']} ms over {row['finals']} finals")
        if not row["finals"] or row["p95_ms"] > TRANSCRIBE_P95_MS:
            break
        capacity = calls
    return {"levels": rows, "capacity_calls": capacity}


# --- command ------------------------------------------------------------------------------------------------


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


@click.command("acs")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("bench/results/acs.json"))
@click.option("--relay-levels", default="100,200,400,600,800,1000,1200,1500", show_default=True)
@click.option("--relay-seconds", type=float, default=5.0, show_default=True)
@click.option("--stacks", default=",".join(STACKS), show_default=True)
@click.option("--transcribe-levels", default="2,4,8,12,16,20,24", show_default=True)
@click.option("--transcribe-seconds", type=float, default=40.0, show_default=True)
@click.option("--skip-relay", is_flag=True)
@click.option("--skip-transcribe", is_flag=True)
def bench_acs(
    out: Path,
    relay_levels: str,
    relay_seconds: float,
    stacks: str,
    transcribe_levels: str,
    transcribe_seconds: float,
    skip_relay: bool,
    skip_transcribe: bool,
) -> None:
    """ACS door capacity: relay streams per core (AI off) and simultaneous real-time transcribed calls."""

    def say(message: str) -> None:
        click.echo(f"koe: {message}", err=True)

    result: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "criteria": {"relay_p99_ms": RELAY_P99_MS, "transcribe_p95_ms": TRANSCRIBE_P95_MS},
    }
    # Other work on the machine skews every number here; the load average says how much there was.
    load_before = os.getloadavg()
    if out.exists():
        with contextlib.suppress(ValueError):
            result = {**json.loads(out.read_text()), **result}
    if not skip_relay:
        relay: dict[str, Any] = {"json_per_frame": json_costs(), "stacks": {}}
        for stack in stacks.split(","):
            module = stack.split("-")[0]
            if importlib.util.find_spec(module) is None:
                relay["stacks"][stack] = {"skipped": f"{module} is not installed"}
                continue
            relay["stacks"][stack] = asyncio.run(_relay(stack, _ints(relay_levels), relay_seconds, say))
        profile_at = max(100, relay["stacks"].get("hypercorn", {}).get("capacity_streams_per_core", 100))
        relay["profile"] = {
            "stack": "hypercorn",
            "streams": profile_at,
            "cpu_by_area": asyncio.run(_relay_profile(profile_at, relay_seconds, Path("/tmp/koe-acs-relay.prof"))),
        }
        result["relay"] = relay
    if not skip_transcribe:
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
        levels = _ints(transcribe_levels)
        result["transcribe"] = {
            "partial_results": asyncio.run(_transcribe(levels, transcribe_seconds, say)),
            "finals_only": asyncio.run(_transcribe(levels, transcribe_seconds, say, partials=False)),
        }
    result["load_average"] = {
        "before": [round(x, 2) for x in load_before],
        "after": [round(x, 2) for x in os.getloadavg()],
    }
    result["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    click.echo(json.dumps(result, indent=2))
    say(f"wrote {out}")
