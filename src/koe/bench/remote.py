"""`koe bench remote`: what a remote STT or TTS hop adds (`stt.backend`/`tts.backend = "remote"`, docs/cluster.md).

Three ways to the same models, all on this machine, one request at a time and in turn so that each sees the same
load: **local**, the engines in this process (what a door node with its own models does); **remote**, the remote
backends against a koe model node in a child process (`benchserve node`, doors off), one HTTP hop; **door**, a
client of a door node (a second child, no STT or TTS of its own) whose REST API goes on to the model node, two
hops, as a client of a door node sees it. For STT: the wall time of each fixture utterance's transcription; for
TTS: the time to the first audio and to the last of a two-sentence reply. A hop's cost is its median minus the
local median. The first request of each way is left out (a model's first run is slower). Also reported: the
resident memory of the door node and of the model node. `--runs` sets the size.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import click

from koe.audio.files import read_audio
from koe.audio.pcm import ENGINE_RATE
from koe.bench._child import Child, write_toml
from koe.bench.engines import machine_info
from koe.bench.fixtures import AUDIO
from koe.config import Settings, load_settings
from koe.engines.base import STT, TTS, SpeechChunk
from koe.engines.registry import load_engines
from koe.engines.stt_remote import RemoteSTT
from koe.engines.tts_remote import RemoteTTS

Progress = Callable[[str], None]
CLIPS = ("short_16k.wav", "utterance_16k.wav", "reply_16k.wav")
REPLY = "Sure, I can help with that. The nearest pharmacy opens at nine tomorrow morning."
DOORS_OFF: dict[str, Any] = {"acs": {"enabled": False}, "sora": {"enabled": False}, "realtime": {"enabled": False}}
WAYS = ("local", "remote", "door")


def run_remote_bench(settings: Settings, runs: int = 3, progress: Progress | None = None) -> dict[str, Any]:
    say = progress or (lambda _message: None)
    with tempfile.TemporaryDirectory(prefix="koe-bench-remote-") as folder:
        model_config = {"server": {"log_level": "warning"}, **DOORS_OFF}
        say("starting the model node (Whisper and Piper in a child process)…")
        model = Child("node", "{port}", str(write_toml(Path(folder) / "model.toml", model_config)), "stt,tts")
        base = f"http://127.0.0.1:{model.port}/v1"
        remote = {"backend": "remote", "base_url": base}
        door_config = {"server": {"log_level": "warning"}, "sora": {"enabled": False}, "stt": remote, "tts": remote}
        door = Child("node", "{port}", str(write_toml(Path(folder) / "door.toml", door_config)), "stt,tts")
        try:
            say("loading the same engines here, for the local figures…")
            local = load_engines(settings, ["stt", "tts"])
            stt, tts = local.require("stt"), local.require("tts")
            result = asyncio.run(_measure(stt, tts, base, f"http://127.0.0.1:{door.port}/v1", runs, say))
            result["memory_mb"] = {"door_node": _rss_mb(door.process.pid), "model_node": _rss_mb(model.process.pid)}
            for pool in local.pools():
                pool.shutdown()
        finally:
            door.stop()
            model.stop()
    return {"machine": machine_info(), "runs": runs, **result}


async def _measure(stt: STT, tts: TTS, model_url: str, door_url: str, runs: int, say: Progress) -> dict[str, Any]:
    clips = [read_audio(AUDIO / name, ENGINE_RATE) for name in CLIPS]
    transcribers: dict[str, STT] = {
        "local": stt,
        "remote": RemoteSTT(model_url, "whisper-1", language="en"),
        "door": RemoteSTT(door_url, "whisper-1", language="en"),
    }
    speakers: dict[str, TTS] = {
        "local": tts,
        "remote": RemoteTTS(model_url, "tts-1", default_voice=tts.default_voice, voices={}),
        "door": RemoteTTS(door_url, "tts-1", default_voice=tts.default_voice, voices={}),
    }
    stt_s: dict[str, list[float]] = {way: [] for way in WAYS}
    first_s: dict[str, list[float]] = {way: [] for way in WAYS}
    total_s: dict[str, list[float]] = {way: [] for way in WAYS}
    for run in range(runs + 1):  # run 0 warms every way up and is left out
        for pcm in clips:
            for way in WAYS:
                elapsed = await _timed(transcribers[way].transcribe(pcm))
                if run:
                    stt_s[way].append(elapsed)
        for way in WAYS:
            first, total = await _speech_times(speakers[way].synthesize(REPLY))
            if run:
                first_s[way].append(first)
                total_s[way].append(total)
        say(f"run {run}/{runs} done" + (" (warm-up)" if run == 0 else ""))
    for engine in (*transcribers.values(), *speakers.values()):
        if isinstance(engine, RemoteSTT | RemoteTTS):
            await engine.aclose()
    return {
        "stt": _ways(stt_s, "transcription_ms"),
        "tts": {**_ways(first_s, "first_audio_ms"), **_ways(total_s, "last_audio_ms")},
    }


async def _timed(call: Awaitable[Any]) -> float:
    """The wall time of `call`, a coroutine not started yet."""
    started = time.perf_counter()
    await call
    return time.perf_counter() - started


async def _speech_times(chunks: AsyncIterator[SpeechChunk]) -> tuple[float, float]:
    started = time.perf_counter()
    first: float | None = None
    async for _chunk in chunks:
        first = time.perf_counter() - started if first is None else first
    return first or 0.0, time.perf_counter() - started


def _ways(seconds: dict[str, list[float]], name: str) -> dict[str, Any]:
    """Each way's median in ms, and what each hop adds to the local median."""
    medians = {way: round(statistics.median(values) * 1000, 1) for way, values in seconds.items()}
    return {
        name: medians,
        f"{name}_added": {way: round(medians[way] - medians["local"], 1) for way in ("remote", "door")},
        "n": len(seconds["local"]),
    }


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


@click.command("remote")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None)
@click.option("--runs", type=int, default=3, show_default=True, help="Timed rounds (each: 3 clips, 1 reply per way).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("bench/results/remote.json"))
def bench_remote(config_file: Path | None, runs: int, out: Path) -> None:
    """What a remote STT or TTS hop adds: local engines, a model node, and a door node in front of it."""

    def say(message: str) -> None:
        click.echo(f"koe: {message}", err=True)

    load_before = os.getloadavg()
    result = run_remote_bench(load_settings(config_file), runs=max(1, runs), progress=say)
    result["load_average"] = {
        "before": [round(x, 2) for x in load_before],
        "after": [round(x, 2) for x in os.getloadavg()],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2)
    out.write_text(text + "\n", encoding="utf-8")
    click.echo(text)
    say(f"wrote {out}")
