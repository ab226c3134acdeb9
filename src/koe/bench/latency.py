"""`koe bench latency`: how long a caller waits for koe's spoken reply, and how fast koe stops when interrupted.

It plays fixture utterances at real-time pace into `/voice-live/realtime`, as a microphone would: silence, speech,
then silence that never stops, once per configuration: each turn detection (`server_vad`, `semantic_vad`) at each
`silence_duration_ms` asked for (200 and 500 by default), `turns` turns each. Everything is measured from the
client's side, as a Voice Live or OpenAI client sees it. For each turn it measures:
- response latency: from the end of the caller's speech (the last voiced 20 ms frame sent) to the first
  `response.audio.delta` received;
- its breakdown, from koe's `koe.response.timing` event (`?koe_timings=1`): turn end, STT, LLM first token, TTS
  first audio (they overlap: koe transcribes and starts answering during the pause that ends the turn);
- barge-in latency, on every other turn: the next utterance starts while the reply plays, and the figure is from
  that speech's onset (its first voiced frame sent) to the last audio delta received of the interrupted reply (koe
  paces every reply from its first chunk, so this is the time koe takes to stop, not the time a burst took; 0 when
  koe sent nothing after the onset), and to `speech_started` (`barge_in_heard_ms`, when the client is told to stop).
The reply's own echo is in the input: each reply plays on the caller's loudspeaker (`Loudspeaker`, which stops at
`speech_started`) and reaches the microphone through a room (`ECHO_TAPS`), so koe's echo canceller must keep the
reply from interrupting itself; `false_starts` counts the times it did not (koe heard speech while the caller was
silent).
Each configuration's `waterfall_ms` gives the per-stage figures (p50, p95) and what the client saw beyond koe's
own total (`client_extra_ms`: the last frame's way over the network and into koe, the first delta's way out; koe's
total already counts its input pipeline's delays).
Then the same turns go to the ACS door in agent mode (`koe.bench.latency_acs`), measured as the ACS platform sees
them. Without `--url` it serves koe in-process on a free port (the same app `koe serve` runs). What it sends goes
through the Realtime client (`koe.protocols.realtime.client`); events are read as they come, koe's own
`koe.response.timing` among them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from koe.bench._turns import (
    FIXTURES,
    INTERRUPT_AFTER_S,
    LEAD_S,
    RATE,
    Loudspeaker,
    Microphone,
    Progress,
    Turn,
    Utterance,
    load_utterances,
)
from koe.bench.latency_acs import run_acs_turns
from koe.config import Settings
from koe.protocols.realtime import Dialect
from koe.protocols.realtime import client as rt
from koe.tasks import within

FRAME = RATE // 50
SILENCE_MS = (200, 500)
TURN_DETECTIONS = ("server_vad", "semantic_vad")
DOORS = ("voice-live", "acs")
STAGES = (
    "turn_end_ms",
    "endpoint_ms",
    "stt_ms",
    "llm_wait_ms",
    "llm_first_token_ms",
    "first_clause_ms",
    "tts_first_audio_ms",
    "release_wait_ms",
    "total_ms",
)
"""koe's own report of each reply (`koe.response.timing`): `turn_end_ms` overlaps the rest, which is the chain from
the end of speech to the first audio leaving."""


REPLY_EVENTS = ("response.audio.delta", "response.done", "koe.response.timing", "input_audio_buffer.speech_started")


def _percentiles(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"p50": None, "p95": None, "n": 0}
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"p50": round(statistics.median(ordered), 1), "p95": round(p95, 1), "n": len(ordered)}


class _Client:
    """The benchmark's microphone and ears: paced frames out, timestamped events in."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.events: asyncio.Queue[tuple[float, dict[str, Any]]] = asyncio.Queue()
        self.silence = rt.audio_append(bytes(FRAME * 2))
        self.speaker = Loudspeaker(RATE)
        self.microphone = Microphone(self.speaker)
        self.held: list[tuple[float, dict[str, Any]]] = []
        """Events read while looking for others, kept for whoever asks for their kind next."""

    async def mic(self) -> None:
        """Send one frame every 20 ms: queued speech first, else silence."""
        await self.microphone.run(self._send)

    async def _send(self, pcm: bytes | None, _number: int) -> None:
        await self.ws.send(rt.audio_append(pcm) if pcm is not None else self.silence)

    async def ears(self) -> None:
        """Events as they come; reply audio plays on the loudspeaker, which stops at `speech_started`, as the
        Voice Live quickstart's player does."""
        async for raw in self.ws:
            at, event = time.perf_counter(), json.loads(raw)
            kind = event.get("type")
            if kind == "response.audio.delta":
                self.speaker.play(base64.b64decode(event.get("delta", "")), at)
            elif kind == "input_audio_buffer.speech_started":
                self.speaker.flush(at)
                self.microphone.heard_speech(at)
            self.events.put_nowait((at, event))

    def say(self, utterance: Utterance) -> tuple[asyncio.Future[float], asyncio.Future[float]]:
        return self.microphone.say(utterance)

    async def next_event(self, kinds: tuple[str, ...], timeout_s: float = 30.0) -> tuple[float, dict[str, Any]]:
        for index, (at, event) in enumerate(self.held):
            if event.get("type") in kinds:
                del self.held[index]
                return at, event
        deadline = time.perf_counter() + timeout_s
        while True:
            at, event = await within(self.events.get(), max(0.01, deadline - time.perf_counter()))
            if event.get("type") == "error":
                raise RuntimeError(f"the server sent an error: {event.get('error')}")
            if event.get("type") in kinds:
                return at, event
            if event.get("type") == "response.created":
                self.held.append((at, event))  # the next turn's reply, already under way


@dataclass(frozen=True)
class Setup:
    """One configuration the benchmark plays its turns under."""

    turn_detection: str
    silence_duration_ms: int
    eagerness: str = "auto"

    def session_patch(self) -> str:
        turns: dict[str, Any] = {"type": self.turn_detection, "silence_duration_ms": self.silence_duration_ms}
        if self.turn_detection == "semantic_vad":
            turns["eagerness"] = self.eagerness
        return json.dumps({"type": "session.update", "session": {"turn_detection": turns}})


async def _run_turns(url: str, headers: dict[str, str], setup: Setup, turns: int, say_progress: Progress) -> list[Turn]:
    from websockets.asyncio.client import connect

    utterances = load_utterances()
    results: list[Turn] = []
    async with connect(url, additional_headers=headers, max_size=None) as ws:
        client = _Client(ws)
        session = rt.ClientSession(
            # Replies long enough to be still playing when a barge-in turn speaks over them.
            instructions="You are a helpful voice assistant. Answer in two or three short sentences.",
            silence_duration_ms=setup.silence_duration_ms,
        )
        await ws.send(rt.session_update(Dialect.AZURE, session))
        await ws.send(setup.session_patch())
        tasks = [asyncio.create_task(client.mic()), asyncio.create_task(client.ears())]
        try:
            await client.next_event(("session.updated",))
            await client.next_event(("session.updated",))
            await asyncio.sleep(LEAD_S)
            pending: tuple[asyncio.Future[float], asyncio.Future[float]] | None = None
            for index in range(turns):
                utterance = utterances[index % len(utterances)]
                turn = Turn(utterance.name)
                false_starts = client.microphone.false_starts
                _, last = pending if pending is not None else client.say(utterance)
                pending = None
                last_voiced_at = await last
                while True:  # a pause inside the utterance may have ended an earlier, shorter turn
                    created_at, created = await client.next_event(("response.created",), 60)
                    if created_at >= last_voiced_at:
                        break
                response_id = created["response"]["id"]
                while True:
                    first_audio_at, delta = await client.next_event(("response.audio.delta",), 60)
                    if delta.get("response_id") == response_id:
                        break
                turn.latency_ms = (first_audio_at - last_voiced_at) * 1000
                barge = index % 2 == 1 and index + 1 < turns
                if barge:
                    interrupting = utterances[(index + 1) % len(utterances)]
                    await asyncio.sleep(max(0.0, INTERRUPT_AFTER_S - interrupting.first_voiced * 0.02))
                    pending = client.say(interrupting)
                    onset = await pending[0]
                    last_delta = first_audio_at
                    heard_at: float | None = None
                status = None
                while True:
                    at, event = await client.next_event(REPLY_EVENTS, 60)
                    if event["type"] == "input_audio_buffer.speech_started":
                        if barge and heard_at is None and at >= onset:
                            heard_at = at
                    elif event["type"] == "koe.response.timing" and event.get("response_id") == response_id:
                        turn.breakdown = {k: v for k, v in event.items() if k.endswith("_ms")}
                    elif event["type"] == "response.audio.delta" and event.get("response_id") == response_id:
                        last_delta = at
                    elif event["type"] == "response.done" and event["response"]["id"] == response_id:
                        status = event["response"].get("status")
                        break
                if barge:
                    # Cancelled: koe still had audio to send when the caller spoke; the figure is how long it went on
                    # sending (0 if it sent nothing after the onset: held from the first voiced window on). Done
                    # before that: the reply had been sent in full, nothing was left to stop: no figure, not 0 ms.
                    stopped = status == "cancelled"
                    turn.barge_in_ms = max(0.0, (last_delta - onset) * 1000) if stopped else None
                    turn.reply_sent_before_onset = not stopped
                    if heard_at is not None:
                        turn.barge_in_heard_ms = (heard_at - onset) * 1000
                else:
                    await asyncio.sleep(1.0)  # let the reply finish playing before the caller speaks again
                turn.false_starts = client.microphone.false_starts - false_starts
                results.append(turn)
                say_progress(
                    f"{setup.turn_detection} {setup.silence_duration_ms} ms, turn {index + 1}/{turns} "
                    f"({utterance.name}): response {turn.latency_ms:.0f} ms"
                    + (f", barge-in {turn.barge_in_ms:.0f} ms" if turn.barge_in_ms is not None else "")
                )
        finally:
            for task in tasks:
                task.cancel()
    return results


@contextlib.asynccontextmanager
async def _local_server(config_file: Path | None, say: Progress) -> AsyncIterator[str]:
    """koe as `koe serve` runs it, in a child process with the same config file."""
    from koe.bench._child import Child

    say("starting koe (loading its engines)")
    child = await asyncio.to_thread(Child, "realtime", "{port}", *([str(config_file)] if config_file else []))
    try:
        yield f"ws://127.0.0.1:{child.port}"
    finally:
        child.stop()


def _waterfall(turns: list[Turn]) -> dict[str, Any]:
    """Each stage's p50 and p95 (koe's own report of each reply), and what the client saw beyond koe's total."""
    stages: dict[str, Any] = {
        part: _percentiles([t.breakdown[part] for t in turns if t.breakdown.get(part) is not None]) for part in STAGES
    }
    extra = [
        t.latency_ms - t.breakdown["total_ms"]
        for t in turns
        if t.latency_ms is not None and t.breakdown.get("total_ms") is not None
    ]
    stages["client_extra_ms"] = _percentiles(extra)
    return stages


def _acs_summary(silence_ms: int, turns: list[Turn]) -> dict[str, Any]:
    return {
        "door": "acs",
        "mode": "agent",
        "turn_detection": "the ACS door's (acs.silence_duration_ms)",
        "silence_duration_ms": silence_ms,
        "response_latency_ms": _percentiles([t.latency_ms for t in turns if t.latency_ms is not None]),
        "barge_in_latency_ms": _percentiles([t.barge_in_ms for t in turns if t.barge_in_ms is not None]),
        "barge_ins_with_nothing_left_to_stop": sum(1 for t in turns if t.reply_sent_before_onset),
        "false_starts": sum(t.false_starts for t in turns),
        "turns": [vars(t) for t in turns],
    }


def _summary(setup: Setup, turns: list[Turn]) -> dict[str, Any]:
    return {
        "door": "voice-live",
        "turn_detection": setup.turn_detection,
        "silence_duration_ms": setup.silence_duration_ms,
        **({"eagerness": setup.eagerness} if setup.turn_detection == "semantic_vad" else {}),
        "response_latency_ms": _percentiles([t.latency_ms for t in turns if t.latency_ms is not None]),
        "barge_in_latency_ms": _percentiles([t.barge_in_ms for t in turns if t.barge_in_ms is not None]),
        "barge_ins_with_nothing_left_to_stop": sum(1 for t in turns if t.reply_sent_before_onset),
        "false_starts": sum(t.false_starts for t in turns),
        "barge_in_heard_ms": _percentiles([t.barge_in_heard_ms for t in turns if t.barge_in_heard_ms is not None]),
        "waterfall_ms": _waterfall(turns),
        "turns": [vars(t) for t in turns],
    }


async def bench_latency(
    settings: Settings,
    url: str | None,
    turns: int,
    say: Progress,
    config_file: Path | None = None,
    silences_ms: tuple[int, ...] = SILENCE_MS,
    turn_detections: tuple[str, ...] = TURN_DETECTIONS,
    eagerness: str = "auto",
    doors: tuple[str, ...] = DOORS,
) -> dict[str, Any]:
    from koe.bench.engines import machine_info

    keys = [key.get_secret_value() for key in settings.server.api_keys]
    headers = rt.upgrade_headers(Dialect.AZURE, keys[0] if keys else None)
    path = "/voice-live/realtime?api-version=2026-07-15&model=koe&koe_timings=1"
    setups = [Setup(td, silence, eagerness) for td in turn_detections for silence in silences_ms]
    started = time.time()
    runs: list[dict[str, Any]] = []

    async def play(base: str) -> None:
        if "voice-live" in doors:
            for setup in setups:
                runs.append(_summary(setup, await _run_turns(base + path, headers, setup, turns, say)))
        if "acs" in doors:
            # The ACS door's turn detection is the server's: acs.silence_duration_ms of the config it was given.
            runs.append(_acs_summary(settings.acs.silence_duration_ms, await run_acs_turns(base, turns, say)))

    if url is None:
        async with _local_server(config_file, say) as base:
            await play(base)
    else:
        await play(url.rstrip("/"))
    return {
        "benchmark": "latency",
        "target": url or "koe serve (a child process)",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "machine": machine_info(),
        "setup": {"turns_per_run": turns, "fixtures": list(FIXTURES), "pace": "real time", "doors": list(doors)},
        "definitions": {
            "response_latency_ms": "end of the last voiced 20 ms frame sent -> first response.audio.delta received",
            "barge_in_latency_ms": "first voiced frame of the interrupting speech sent -> last audio delta received "
            "(0 when koe sent none after it; replies already sent in full are counted apart)",
            "barge_in_heard_ms": "first voiced frame of the interrupting speech sent -> speech_started received",
            "false_starts": "speech_started (ACS: StopAudio) while the caller was silent: the reply's echo taken for "
            "speech",
            "echo": "each reply plays on the caller's loudspeaker and reaches the microphone through taps at 60 ms "
            "(-12 dB) and 95 ms (-22 dB); the client stops playback at speech_started / StopAudio",
            "acs_response_latency_ms": "end of the last voiced AudioData frame sent -> first outbound AudioData",
            "acs_barge_in_latency_ms": "first voiced frame of the interrupting speech sent -> StopAudio received",
        },
        "targets": {"response_p50_ms": 400, "response_p95_ms": 700, "barge_in_p95_ms": 150},
        "runs": runs,
    }
