"""`koe bench cluster`: two koe nodes sharing their calls through Redis, against one node alone.

Each node is a child process (`python -m koe.server.benchserve node …`, what `koe serve` runs), and Redis is a
throwaway `redis-server` (`koe.bench._redis`), all on loopback:

- **placement**: `--calls` short ACS calls (echo mode, no models), opened on the nodes in turn, `--concurrency` at
  a time. Each sends `AudioMetadata` and one frame, waits until the call's `call.started` has reached a subscriber of
  `/v1/calls/*/events` on its own node and on the other one, and hangs up. Reported: calls placed per second, the
  time from connecting to the call being listed on its own node and on the other (through Redis), and the CPU the
  nodes and Redis spent per call. The same run on one node without Redis is the reference.
- **transcript latency**: one real-time call in transcribe mode on node A (the fixture sentences, each followed by
  as much silence), with subscribers on A (local fan-out) and on B (through Redis). Latency is the call's media time
  at which `transcript.completed` arrives minus the turn's end (`audio_end_ms`), as in `koe bench acs`; the fan-out's
  own cost is B's arrival minus A's, per final. The same call on one node without Redis is the reference. The first
  final of each run is left out: a fresh model's first transcription is slower.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import numpy as np
from websockets.asyncio.client import ClientConnection, connect

from koe.bench._child import Child, write_toml
from koe.bench._redis import RedisServer
from koe.bench.fixtures import AUDIO
from koe.protocols.acs import AudioData, AudioMetadata, encode, iso_timestamp
from koe.tasks import stop

FRAME_BYTES = 640
"""One 20 ms frame of PCM16 at 16 kHz."""
SPEECH_ENGINES = "vad,stt"


def _stats(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50": None, "p95": None, "max": None}
    return {
        "n": len(values),
        "p50": round(float(np.percentile(values, 50)), 2),
        "p95": round(float(np.percentile(values, 95)), 2),
        "max": round(max(values), 2),
    }


def _node(folder: Path, name: str, redis: RedisServer | None, engines: str = "") -> Child:
    config: dict[str, Any] = {"server": {"log_level": "warning"}, "sora": {"enabled": False}}
    if redis is not None:
        config["cluster"] = {"redis_url": redis.url, "node_id": name}
    return Child("node", "{port}", str(write_toml(folder / f"{name}.toml", config)), engines)


class _Watcher:
    """Every event of every call, as one node's `/v1/calls/*/events` delivers it, with its arrival time."""

    def __init__(self, child: Child) -> None:
        self.url = f"ws://127.0.0.1:{child.port}/v1/calls/*/events"
        self.started: dict[str, float] = {}
        self.finals: dict[str, float] = {}
        """item id → arrival (time.monotonic())."""
        self.on_final: Callable[[dict[str, Any]], None] | None = None
        self._waiters: dict[str, asyncio.Event] = {}
        self._task: asyncio.Task[None] | None = None
        self._socket: ClientConnection | None = None

    async def start(self) -> None:
        self._socket = await connect(self.url, max_size=None)
        self._task = asyncio.create_task(self._read(self._socket))

    async def close(self) -> None:
        if self._task is not None:
            await stop(self._task)
        if self._socket is not None:
            await self._socket.close()

    async def started_call(self, call_id: str) -> float:
        if call_id not in self.started:
            await self._waiters.setdefault(call_id, asyncio.Event()).wait()
        return self.started[call_id]

    async def _read(self, socket: ClientConnection) -> None:
        async for message in socket:
            event = json.loads(message)
            now = time.monotonic()
            if event.get("type") == "call.started":
                self.started[event["call_id"]] = now
                waiter = self._waiters.pop(event["call_id"], None)
                if waiter is not None:
                    waiter.set()
            elif event.get("type") == "transcript.completed":
                self.finals[str(event.get("item_id"))] = now
                if self.on_final is not None:
                    self.on_final(event)


# --- placement ----------------------------------------------------------------------------------------------------


async def _place(child: Child, call_id: str, watchers: list[_Watcher]) -> list[float]:
    """One short call on `child`: ms until each watcher saw it start."""
    began = time.monotonic()
    url = f"ws://127.0.0.1:{child.port}/acs/media?mode=echo"
    async with connect(url, additional_headers={"x-ms-call-connection-id": call_id}) as socket:
        await socket.send(encode(AudioMetadata(call_id, 16000)))
        await socket.send(encode(AudioData(bytes([7]) * FRAME_BYTES, iso_timestamp(time.time()))))
        seen = [await watcher.started_call(call_id) for watcher in watchers]
    return [(at - began) * 1000 for at in seen]


async def _placement(children: list[Child], redis: RedisServer | None, calls: int, concurrency: int) -> dict[str, Any]:
    watchers = [_Watcher(child) for child in children]
    for watcher in watchers:
        await watcher.start()
    gate = asyncio.Semaphore(concurrency)
    here: list[float] = []
    elsewhere: list[float] = []

    async def one(index: int) -> None:
        home = index % len(children)
        order = [watchers[home], *[w for i, w in enumerate(watchers) if i != home]]
        async with gate:
            seen = await _place(children[home], f"bench-{len(children)}-{index}", order)
        here.append(seen[0])
        elsewhere.extend(seen[1:])

    cpu_before = [child.cpu_s() for child in children]
    redis_before = redis.cpu_s() if redis is not None else 0.0
    client_before = time.process_time()
    began = time.monotonic()
    await asyncio.gather(*(one(index) for index in range(calls)))
    wall = time.monotonic() - began
    client_cpu = time.process_time() - client_before
    cpu = sum(child.cpu_s() - before for child, before in zip(children, cpu_before, strict=True))
    redis_cpu = (redis.cpu_s() - redis_before) if redis is not None else 0.0
    for watcher in watchers:
        await watcher.close()
    row: dict[str, Any] = {
        "nodes": len(children),
        "calls_per_s": round(calls / wall, 1),
        "listed_on_own_node_ms": _stats(here),
        "node_cpu_ms_per_call": round(cpu / calls * 1000, 2),
        # The load generator shares the two cores: at its own CPU per call it may be what limits the rate.
        "client_cpu_ms_per_call": round(client_cpu / calls * 1000, 2),
    }
    if len(children) > 1:
        row["listed_on_other_node_ms"] = _stats(elsewhere)
        row["redis_cpu_ms_per_call"] = round(redis_cpu / calls * 1000, 3)
    return row


# --- transcript latency -------------------------------------------------------------------------------------------


def _call_audio(seconds: float) -> Any:
    from koe.audio.files import read_audio
    from koe.sim.acs.participants import CallAudio, Participant, phone_raw_id

    speech = [read_audio(AUDIO / f"{name}_16k.wav", 16000) for name in ("short", "utterance", "reply")]
    pieces, at = [], 0
    while at < seconds * 16000:
        for pcm in speech:
            pieces += [pcm, np.zeros(pcm.size, dtype=np.int16)]  # as much silence as speech
            at += 2 * pcm.size
    track = np.concatenate(pieces)[: int(seconds * 16000)]
    return CallAudio([Participant(phone_raw_id(1), track)], 16000, tail_ms=1000)


async def _latency(media_node: Child, watched: list[Child], seconds: float) -> dict[str, Any]:
    """The call on `media_node`; one subscriber per node of `watched` (the media node's first)."""
    from koe.sim.acs.media import MediaOptions, MediaStream

    call_id = f"latency-{len(watched)}"
    url = f"ws://127.0.0.1:{media_node.port}/acs/media?mode=transcribe"
    options = MediaOptions(url, 16000, call_connection_id=call_id, bidirectional=False)
    stream = MediaStream(options, _call_audio(seconds))
    watchers = [_Watcher(child) for child in watched]
    latencies: list[dict[str, float]] = [{} for _ in watchers]
    for index, watcher in enumerate(watchers):

        def keep(event: dict[str, Any], into: dict[str, float] = latencies[index]) -> None:
            if event.get("call_id") == call_id:
                into[str(event["item_id"])] = stream.media_ms() - float(event["audio_end_ms"])

        watcher.on_final = keep
        await watcher.start()
    await stream.run()
    await asyncio.sleep(2.0)
    for watcher in watchers:
        await watcher.close()
    items = sorted(latencies[0], key=lambda item: watchers[0].finals[item])[1:]  # the first final: a cold model
    row: dict[str, Any] = {"finals": len(items), "own_node_ms": _stats([latencies[0][i] for i in items])}
    if len(watchers) > 1:
        both = [i for i in items if i in latencies[1]]
        row["other_node_ms"] = _stats([latencies[1][i] for i in both])
        row["fanout_added_ms"] = _stats([(watchers[1].finals[i] - watchers[0].finals[i]) * 1000 for i in both])
    return row


# --- the run ------------------------------------------------------------------------------------------------------


async def _run(calls: int, concurrency: int, seconds: float, say: Callable[[str], None]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="koe-bench-cluster-") as tmp:
        folder = Path(tmp)
        single = _node(folder, "alone", None, SPEECH_ENGINES)
        try:
            say(f"placement: {calls} calls on one node, {concurrency} at a time")
            result["placement_single_node"] = await _placement([single], None, calls, concurrency)
            say(f"transcript latency: a {seconds:g} s call on one node")
            result["latency_single_node"] = await _latency(single, [single], seconds)
        finally:
            single.stop()
        redis = RedisServer()
        redis.start()
        a = b = None
        try:
            a = _node(folder, "a", redis, SPEECH_ENGINES)
            b = _node(folder, "b", redis)
            await asyncio.sleep(1.0)  # both connected to Redis, and each has the other's heartbeat
            say(f"placement: {calls} calls across two nodes, {concurrency} at a time")
            result["placement_two_nodes"] = await _placement([a, b], redis, calls, concurrency)
            say(f"transcript latency: a {seconds:g} s call on node A, read on A and on B")
            result["latency_two_nodes"] = await _latency(a, [a, b], seconds)
        finally:
            for child in (a, b):
                if child is not None:
                    child.stop()
            redis.close()
    return result


@click.command("cluster")
@click.option("--calls", type=int, default=400, show_default=True, help="Short calls to place, in each setup.")
@click.option("--concurrency", type=int, default=20, show_default=True, help="Calls being placed at once.")
@click.option("--seconds", type=float, default=60.0, show_default=True, help="Length of the transcribed call.")
@click.option("--quick", is_flag=True, help="A smoke run: 40 calls and a 20 s call.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("bench/results/cluster.json"))
def bench_cluster(calls: int, concurrency: int, seconds: float, quick: bool, out: Path) -> None:
    """Two nodes sharing calls through Redis against one: calls placed per second, and transcript latency."""

    def say(message: str) -> None:
        click.echo(f"koe: {message}", err=True)

    if quick:
        calls, seconds = min(calls, 40), min(seconds, 20.0)
    load_before = os.getloadavg()
    result: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "settings": {"calls": calls, "concurrency": concurrency, "seconds": seconds, "quick": quick},
        **asyncio.run(_run(calls, concurrency, seconds, say)),
        "load_average": {
            "before": [round(x, 2) for x in load_before],
            "after": [round(x, 2) for x in os.getloadavg()],
        },
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    click.echo(json.dumps(result, indent=2))
    say(f"wrote {out}")
