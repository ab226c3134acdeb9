"""`koe bench soak`: many short sessions across the doors, or a steady load for a while, and whether koe gives back
what they took.

`await run_soak(sessions, duration_s, concurrency)` starts koe in a child process (`benchserve node`: ACS in echo mode,
the Realtime API, the Sora test service; no models, so what is measured is the doors' own bookkeeping) and runs short
sessions in turn, `concurrency` at a time, until `sessions` are done or `duration_s` has passed: an ACS echo call
(metadata, 10 frames, its echo, close), a Realtime session (a `session.update`, a text item, close) and a Sora stream
(5 packets on `/test`, its results). Every `SAMPLE_EVERY` sessions it reads the child's resident memory and open file
descriptors from /proc, and `GET /healthz`. The verdict compares the last sample with the one after warm-up
(`WARM_UP` of the run): flat means resident memory within `FLAT_PERCENT` and no more descriptors open at rest
than at the start. asyncio tasks are not visible from outside the process, and are not measured. With matplotlib
installed, a PNG of both over the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import click
import httpx
import numpy as np
from websockets.asyncio.client import connect

from koe.bench._child import Child, write_toml
from koe.net.inprocess import free_port
from koe.protocols import acs
from koe.protocols.sora import frame_packet
from koe.sim.sora.gateway_client import GatewayConnection

SAMPLE_EVERY = 100
WARM_UP = 0.2
FLAT_PERCENT = 5.0
_TONE = (np.sin(np.arange(320) * 0.2) * 6000).astype("<i2").tobytes()
_SORA_HEADERS = [
    ("sora-channel-id", "sora"),
    ("sora-session-id", "S"),
    ("sora-connection-id", "C"),
    ("sora-audio-streaming-language-code", "en-US"),
]


def _proc(pid: int) -> tuple[float, int]:
    """(resident MB, open fds) of process `pid`."""
    rss_kb = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kb = int(line.split()[1])
    return rss_kb / 1024, len(os.listdir(f"/proc/{pid}/fd"))


async def _acs_call(ws_base: str, index: int) -> None:
    async with connect(f"{ws_base}/acs/media", additional_headers={"x-ms-call-connection-id": f"soak-{index}"}) as ws:
        await ws.send(acs.encode(acs.AudioMetadata(f"soak-{index}", 16000)))
        frame = acs.encode(acs.AudioData(_TONE, acs.iso_timestamp(time.time())))
        for _ in range(10):
            await ws.send(frame)
        await asyncio.wait_for(ws.recv(), 10)


async def _realtime(ws_base: str, index: int) -> None:
    async with connect(f"{ws_base}/v1/realtime?model=soak") as ws:
        await ws.recv()  # session.created
        await ws.send('{"type":"session.update","session":{"type":"realtime","instructions":"soak"}}')
        await ws.send(
            '{"type":"conversation.item.create","item":{"type":"message","role":"user",'
            f'"content":[{{"type":"input_text","text":"session {index}"}}]}}}}'
        )
        for _ in range(2):
            await asyncio.wait_for(ws.recv(), 10)


async def _sora(sora_port: int, index: int) -> None:
    conn = await GatewayConnection.connect(f"http://127.0.0.1:{sora_port}")
    try:
        stream = await conn.open_stream("/test", _SORA_HEADERS)
        for seq in range(5):
            await stream.send(frame_packet(b"\xfc\xff\xfe", seq * 20_000, seq))
        await stream.end()
        await stream.closed(10)
    finally:
        await conn.close()


async def run_soak(
    sessions: int, duration_s: float | None, concurrency: int, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    say = progress or (lambda _message: None)
    many = 1_000_000
    with tempfile.TemporaryDirectory(prefix="koe-soak-") as folder:
        sora_port = free_port()
        config = write_toml(
            Path(folder) / "koe.toml",
            {
                "server": {"log_level": "error"},
                "acs": {"mode": "echo"},
                "sora": {"port": sora_port, "service": "test", "audio_streaming_header": True},
                "limits": {"realtime_sessions": many, "acs_sessions": many, "sora_sessions": many},
            },
        )
        child = Child("node", "{port}", str(config))
        ws_base = f"ws://127.0.0.1:{child.port}"
        kinds: list[Callable[[int], Awaitable[None]]] = [
            lambda i: _acs_call(ws_base, i),
            lambda i: _realtime(ws_base, i),
            lambda i: _sora(sora_port, i),
        ]
        samples: list[dict[str, float]] = []
        failures = 0
        done = 0
        started = time.monotonic()
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{child.port}", timeout=10) as health:

                async def sample() -> None:
                    rss, fds = _proc(child.process.pid)
                    healthy = (await health.get("/healthz")).status_code == 200
                    samples.append(
                        {
                            "sessions": done,
                            "s": round(time.monotonic() - started, 1),
                            "rss_mb": rss,
                            "fds": fds,
                            "healthz": healthy,
                        }
                    )

                await sample()
                while done < sessions and (duration_s is None or time.monotonic() - started < duration_s):
                    batch = [kinds[(done + i) % len(kinds)](done + i) for i in range(concurrency)]
                    results = await asyncio.gather(*batch, return_exceptions=True)
                    failures += sum(isinstance(r, BaseException) for r in results)
                    before, done = done, done + concurrency
                    if done // SAMPLE_EVERY != before // SAMPLE_EVERY:
                        await sample()
                        if len(samples) % 10 == 0:
                            say(f"{done} sessions, {samples[-1]['rss_mb']:.0f} MB, {samples[-1]['fds']} fds")
                await asyncio.sleep(1.0)  # let the last sessions' tasks finish
                await sample()
            exited = child.process.poll() is not None
        finally:
            child.stop()
    return _verdict(samples, done, failures, exited, time.monotonic() - started, concurrency)


def _verdict(
    samples: list[dict[str, Any]], done: int, failures: int, exited: bool, seconds: float, concurrency: int
) -> dict[str, Any]:
    warm = samples[min(len(samples) - 1, max(1, int(len(samples) * WARM_UP)))]
    last = samples[-1]

    def growth(key: str) -> float:
        return round((last[key] - warm[key]) * 100.0 / warm[key], 2) if warm[key] else 0.0

    rss = growth("rss_mb")
    # Descriptors are compared at rest (no session open): the first sample, and the last, taken a second after the
    # last session; in between they count the sessions in flight.
    fds_leaked = last["fds"] - samples[0]["fds"]
    return {
        "sessions": done,
        "concurrency": concurrency,
        "failed_sessions": failures,
        "seconds": round(seconds, 1),
        "after_warm_up": warm,
        "last": last,
        "rss_growth_percent": rss,
        "fds_at_rest_start_end": [samples[0]["fds"], last["fds"]],
        "flat": abs(rss) <= FLAT_PERCENT and fds_leaked <= 0,
        "healthz_failures": sum(not s["healthz"] for s in samples),
        "server_exited": exited,
        "samples": samples,
    }


def plot(result: dict[str, Any], path: Path) -> bool:
    """RSS and open fds over the run, as a PNG; False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    samples = result["samples"]
    x = [s["sessions"] for s in samples]
    figure, memory = plt.subplots(figsize=(8, 4))
    memory.plot(x, [s["rss_mb"] for s in samples], color="tab:blue", label="RSS (MB)")
    memory.set_xlabel("sessions")
    memory.set_ylabel("RSS (MB)")
    fds = memory.twinx()
    fds.plot(x, [s["fds"] for s in samples], color="tab:orange", label="open fds")
    fds.set_ylabel("open fds")
    memory.set_title(f"koe bench soak: {result['sessions']} sessions, RSS {result['rss_growth_percent']:+.1f} %")
    figure.tight_layout()
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


def _say(message: str) -> None:
    click.echo(f"koe: {message}", err=True)


@click.command("soak")
@click.option("--sessions", type=int, default=10_000, show_default=True, help="Short sessions across the doors.")
@click.option("--duration", type=float, default=None, help="Stop after this many seconds instead (a soak).")
@click.option("--concurrency", type=int, default=6, show_default=True, help="Sessions at once.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("bench/results/soak.json"))
def bench_soak(sessions: int, duration: float | None, concurrency: int, out: Path) -> None:
    """Many short sessions (ACS, Realtime, Sora): koe's RSS and open fds after warm-up, flat within 5 %?"""
    result = asyncio.run(run_soak(sessions if duration is None else 10**9, duration, concurrency, progress=_say))
    result["command"] = f"koe bench soak --sessions {sessions} --concurrency {concurrency}" + (
        f" --duration {duration:g}" if duration is not None else ""
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if plot(result, out.with_suffix(".png")):
        _say(f"wrote {out.with_suffix('.png')}")
    start_fds, end_fds = result["fds_at_rest_start_end"]
    _say(f"wrote {out}: RSS {result['rss_growth_percent']:+.1f} % after warm-up, fds at rest {start_fds} -> {end_fds}")
