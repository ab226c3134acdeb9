"""The leak check of `koe bench soak`: many short sessions across koe's four doors, and what the server keeps.

Call `run_leak(sessions, concurrency, progress)`. One koe runs in a child process as `koe serve` would
(`benchserve node`: the main port with Realtime, ACS and REST, and the Sora door on its own port, with VAD and STT
loaded). Sessions go round the doors, `concurrency` at a time, in batches:

- **realtime**: a WebSocket to `/v1/realtime`, `session.update`, 100 ms of audio, `session.updated`, close;
- **acs**: a media WebSocket (echo and transcribe mode in turn), `AudioMetadata`, five `AudioData` frames, close;
- **sora**: a new HTTP/2 connection, `POST /speech` (service `koe`), 200 ms of Opus, end of stream, its reply;
- **rest**: a new HTTP connection for `GET /v1/models`, `GET /healthz` or a short `POST /v1/audio/transcriptions`.

After each batch, once the server has settled, its RSS and open fds are read from `/proc` and its asyncio task
count from `/metrics` (`koe_asyncio_tasks`). Each figure is flat when its end value is at most `FLAT_FRACTION`
above its value after warm-up (which lasts until the call registry holds all the ended calls it keeps); a fall is
not a leak. `koe_sessions_active` must be back at zero for every door.
"""

from __future__ import annotations

import asyncio
import base64
import io
import tempfile
import time
import wave
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from koe.audio.opus import OPUS_RATE, OpusEncoder
from koe.bench._child import Child, write_toml
from koe.bench.fixtures import AUDIO
from koe.bench.soak._proc import usage, within
from koe.net.inprocess import free_port
from koe.protocols.acs import AudioData, AudioMetadata, encode, iso_timestamp
from koe.protocols.sora import SoraRequest, frame_packet, request_headers
from koe.sim.sora.gateway_client import GatewayConnection

Progress = Callable[[str], None]
DOORS = ("realtime", "acs", "sora", "rest")
FLAT_FRACTION = 0.05
SESSION_TIMEOUT_S = 30.0
SETTLE_S = 6.0
"""Pause after a batch before sampling, so closed connections are gone and not counted as held: Hypercorn keeps an
HTTP/1.1 connection the client has closed (CLOSE-WAIT, its fd and three tasks) until its keep-alive timeout, 5 s."""
SAMPLES = 20
"""Batches per run by default (so samples): the curve in the JSON."""
ACS_FRAMES = 5
ACS_FRAME_BYTES = 640  # 20 ms of PCM16 at 16 kHz
REALTIME_AUDIO_BYTES = 4800  # 100 ms of PCM16 at 24 kHz
SORA_PACKETS = 10  # 200 ms of 20 ms Opus packets
ENGINES = "vad,stt"
CALLS_KEPT = 200
"""Ended calls the call registry keeps for the console and `/v1/calls` (`koe.server.calls.registry`,
MAX_ENDED_CALLS): until that many ACS and Sora sessions have ended, memory grows by design."""


class _Doors:
    """One short session per door, against the child's two ports."""

    def __init__(self, port: int, sora_port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.ws = f"ws://127.0.0.1:{port}"
        self.sora = f"http://127.0.0.1:{sora_port}"
        quiet = OpusEncoder(OPUS_RATE)
        rng = np.random.default_rng(0)  # low noise, not digital silence: the packets are decoded and heard
        noise = (rng.standard_normal(SORA_PACKETS * 960) * 30).astype(np.int16)
        self.opus = quiet.encode(noise)
        self.speech_wav = _short_wav(AUDIO / "short_16k.wav")

    async def realtime(self, index: int) -> None:
        audio = base64.b64encode(bytes(REALTIME_AUDIO_BYTES)).decode()
        async with connect(f"{self.ws}/v1/realtime?model=koe", open_timeout=SESSION_TIMEOUT_S) as socket:
            await _until(socket, "session.created")
            update = {"type": "session.update", "session": {"type": "realtime", "instructions": f"Soak {index}."}}
            await socket.send(orjson.dumps(update).decode())
            await socket.send(orjson.dumps({"type": "input_audio_buffer.append", "audio": audio}).decode())
            await _until(socket, "session.updated")

    async def acs(self, index: int) -> None:
        mode = "echo" if index % 2 else "transcribe"
        call_id = f"soak-{index}"
        headers = {"x-ms-call-connection-id": call_id}
        url = f"{self.ws}/acs/media?mode={mode}"
        async with connect(url, additional_headers=headers, open_timeout=SESSION_TIMEOUT_S) as socket:
            await socket.send(encode(AudioMetadata(call_id, 16000)))
            for frame in range(ACS_FRAMES):
                stamp = iso_timestamp(1_700_000_000 + frame * 0.02)
                await socket.send(encode(AudioData(bytes([frame + 1]) * ACS_FRAME_BYTES, stamp)))

    async def sora_speech(self, index: int) -> None:
        conn = await GatewayConnection.connect(self.sora)
        try:
            stream = await conn.open_stream("/speech", request_headers(SoraRequest("soak", "S", f"C{index}", "en-US")))
            for sequence, packet in enumerate(self.opus):
                await stream.send(frame_packet(packet, int(time.time() * 1e6), sequence))
            await stream.end()
            await stream.closed(SESSION_TIMEOUT_S)
            status = await stream.response()
            if status != 200:
                raise RuntimeError(f"POST /speech answered {status}")
        finally:
            await conn.close()

    async def rest(self, index: int) -> None:
        async with httpx.AsyncClient(base_url=self.base, timeout=SESSION_TIMEOUT_S) as http:
            kind = index % 3
            if kind == 0:
                response = await http.get("/v1/models")
            elif kind == 1:
                response = await http.get("/healthz")
            else:
                files = {"file": ("short.wav", self.speech_wav, "audio/wav")}
                response = await http.post("/v1/audio/transcriptions", files=files, data={"model": "whisper-1"})
            response.raise_for_status()

    def session(self, door: str) -> Callable[[int], Awaitable[None]]:
        return {"realtime": self.realtime, "acs": self.acs, "sora": self.sora_speech, "rest": self.rest}[door]

    async def scrape(self) -> dict[str, float]:
        async with httpx.AsyncClient(base_url=self.base, timeout=SESSION_TIMEOUT_S) as http:
            response = await http.get("/metrics")
        response.raise_for_status()
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                if sample.name == "koe_asyncio_tasks":
                    out["asyncio_tasks"] = sample.value
                elif sample.name == "koe_sessions_active":
                    out[f"sessions_active_{sample.labels['door']}"] = sample.value
        return out


async def _until(socket: Any, kind: str) -> None:
    async with asyncio.timeout(SESSION_TIMEOUT_S):
        while True:
            event = orjson.loads(await socket.recv())
            if event.get("type") == kind:
                return
            if event.get("type") == "error":
                raise RuntimeError(f"the Realtime door answered an error: {event.get('error')}")


def _short_wav(path: Path, seconds: float = 1.0) -> bytes:
    """The first `seconds` of a 16 kHz WAV fixture, as WAV bytes (a small upload)."""
    with wave.open(str(path), "rb") as source:
        frames = source.readframes(int(source.getframerate() * seconds))
        params = source.getparams()
    out = io.BytesIO()
    with wave.open(out, "wb") as target:
        target.setparams(params)
        target.writeframes(frames)
    return out.getvalue()


def _node(folder: Path) -> tuple[Child, int]:
    sora_port = free_port()
    config = {
        "server": {"log_level": "warning"},
        "sora": {"enabled": True, "port": sora_port, "service": "koe", "audio_streaming_header": True},
    }
    return Child("node", "{port}", str(write_toml(folder / "leak.toml", config)), ENGINES), sora_port


def _growth(samples: list[dict[str, Any]], warm: dict[str, Any], key: str) -> dict[str, Any]:
    first, last = float(warm[key]), float(samples[-1][key])
    return {
        "after_warmup": first,
        "end": last,
        "max": max(float(s[key]) for s in samples),
        "growth_pct": round((last - first) / first * 100, 2) if first else None,
        "flat_within_5pct": within(first, last, FLAT_FRACTION),
    }


async def _measure(
    doors: _Doors, child: Child, sessions: int, concurrency: int, warmup: int, samples_wanted: int, progress: Progress
) -> dict[str, Any]:
    gate = asyncio.Semaphore(concurrency)
    done = dict.fromkeys(DOORS, 0)
    errors: dict[str, list[str]] = {door: [] for door in DOORS}

    async def one(index: int) -> None:
        door = DOORS[index % len(DOORS)]
        async with gate:
            try:
                await doors.session(door)(index // len(DOORS))
            except Exception as exc:  # every failure is counted and reported; none stops the run
                errors[door].append(f"{type(exc).__name__}: {exc}"[:200])
            else:
                done[door] += 1

    batch = max(concurrency, -(-sessions // samples_wanted))
    samples: list[dict[str, Any]] = []
    began = time.monotonic()
    for start in range(0, sessions, batch):
        await asyncio.gather(*(one(index) for index in range(start, min(sessions, start + batch))))
        await asyncio.sleep(SETTLE_S)
        held = usage(child.process.pid)
        scraped = await doors.scrape()
        sample = {
            "sessions": min(sessions, start + batch),
            "seconds": round(time.monotonic() - began, 1),
            "rss_mb": held.rss_mb,
            "open_fds": held.open_fds,
            **scraped,
        }
        samples.append(sample)
        progress(f"leak: {sample}")
    warm = next((s for s in samples if s["sessions"] >= warmup), samples[0])
    last = samples[-1]
    return {
        "sessions": sessions,
        "concurrency": concurrency,
        "warmup_sessions": warm["sessions"],
        "seconds": last["seconds"],
        "sessions_completed": done,
        "errors": {door: len(found) for door, found in errors.items()},
        "first_errors": {door: found[:3] for door, found in errors.items() if found},
        "rss_mb": _growth(samples, warm, "rss_mb"),
        "open_fds": _growth(samples, warm, "open_fds"),
        "asyncio_tasks": _growth(samples, warm, "asyncio_tasks"),
        "sessions_active_at_end": {door: last.get(f"sessions_active_{door}") for door in ("realtime", "acs", "sora")},
        "samples": samples,
    }


def run_leak(
    sessions: int, concurrency: int, progress: Progress, warmup: int | None = None, samples: int = SAMPLES
) -> dict[str, Any]:
    """`warmup`: sessions before the reference sample (default: a tenth of them, and at least enough to fill the
    call registry's `CALLS_KEPT` ended calls, half the sessions being calls, when there are twice as many);
    `samples`: batches, each sampled."""
    if warmup is None:
        warmup = max(sessions // 10, min(sessions // 2, 2 * CALLS_KEPT))
    with tempfile.TemporaryDirectory() as folder:
        child, sora_port = _node(Path(folder))
        try:
            doors = _Doors(child.port, sora_port)
            before = usage(child.process.pid)
            result = asyncio.run(_measure(doors, child, sessions, concurrency, warmup, samples, progress))
        finally:
            child.stop()
    return {"at_start": {"rss_mb": before.rss_mb, "open_fds": before.open_fds}, **result}
