"""Prometheus metrics for the whole server, served at `GET /metrics` on the main port.

Where a door creates a voice `Session`, it calls `METRICS.session(door)` and passes the result as the session's
`observer`: that counts the session as active until its `close()`, counts turns (`InputCommitted` or
`TranscriptCompleted`), replies and barge-ins, and records each reply's latency breakdown from the engine's
`ResponseTiming`. The REST API records
its own STT time, LLM first token and TTS first audio under `door="api"`. At scrape time `/metrics` adds each worker
pool's queue depth, and the Sora door's own counters (`SoraMetrics`, rendered exactly as its listener serves them)
when `app.state.sora` holds the running gateway: read, not copied, so nothing is counted twice.

`METRICS` is process-wide, like prometheus_client's default registry: one koe process serves one set of doors.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from koe.config import Settings
from koe.engines.registry import Engines
from koe.server._asgi_access import guarded
from koe.server.auth import Kind
from koe.voice import events as ev

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DOORS = ("realtime", "acs", "sora")
LATENCY_BUCKETS_S = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
"""End of the caller's speech to the first reply audio."""
STAGE_BUCKETS_S = (0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 2.0, 5.0)
"""One stage of a reply (turn end, STT, LLM first token, TTS first audio)."""

# The `_created` series prometheus_client adds to every counter are noise on a dashboard.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]  # unannotated in prometheus_client


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.sessions_active = Gauge("koe_sessions_active", "Voice sessions in progress.", ["door"], registry=r)
        self.sessions = Counter("koe_sessions_total", "Voice sessions started.", ["door"], registry=r)
        self.turns = Counter("koe_turns_total", "Caller turns transcribed.", ["door"], registry=r)
        self.responses = Counter("koe_responses_total", "Replies finished, by status.", ["door", "status"], registry=r)
        self.barge_ins = Counter("koe_barge_ins_total", "Replies the caller spoke over.", ["door"], registry=r)
        self.response_latency = Histogram(
            "koe_response_latency_seconds",
            "End of the caller's speech to the reply's first audio (or text).",
            ["door"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.turn_end = self._stage("koe_turn_end_seconds", "End of speech to the turn's commit.")
        self.stt = self._stage("koe_stt_seconds", "Speech to text time of a turn or an uploaded file.")
        self.llm_first_token = self._stage("koe_llm_first_token_seconds", "LLM request to its first token.")
        self.tts_first_audio = self._stage("koe_tts_first_audio_seconds", "Text handed to TTS to its first audio.")
        self.api_requests = Counter(
            "koe_api_requests_total",
            "OpenAI-compatible REST requests, by route and status.",
            ["route", "status"],
            registry=r,
        )
        self.refused = Counter(
            "koe_sessions_refused_total",
            "New sessions refused at a limit, by door and limit.",
            ["door", "limit"],
            registry=r,
        )
        self.send_stalls = Counter(
            "koe_send_stalls_total", "Connections closed because the client stopped reading.", ["door"], registry=r
        )
        self.outbound_bytes = Gauge(
            "koe_outbound_queued_bytes", "Bytes waiting to be sent to clients, by door.", ["door"], registry=r
        )
        self.session_ends = Counter(
            "koe_sessions_ended_total",
            "Sessions koe ended itself, by door and reason.",
            ["door", "reason"],
            registry=r,
        )
        self.dropped: dict[tuple[str, str], int] = defaultdict(int)
        for door in DOORS:  # every door shows up from the first scrape, at zero
            self.sessions_active.labels(door)
            self.sessions.labels(door)
            self.turns.labels(door)

    def _stage(self, name: str, help_text: str) -> Histogram:
        return Histogram(name, help_text, ["door"], buckets=STAGE_BUCKETS_S, registry=self.registry)

    def session(self, door: str) -> SessionObserver:
        """Count a new session of `door`; pass the result as `Session(observer=…)` and `close()` it at the end."""
        return SessionObserver(self, door)

    def drop(self, door: str, reason: str, frames: int = 1) -> None:
        """Frames a door received or meant to send but had to discard (malformed, or a full queue)."""
        self.dropped[(door, reason)] += frames

    def render(self, engines: Engines | None, sora: Any = None) -> str:
        scrape = CollectorRegistry()
        scrape.register(_ScrapeTime(self, engines, sora))
        text = prometheus_client.generate_latest(self.registry) + prometheus_client.generate_latest(scrape)
        sora_metrics = getattr(sora, "metrics", None)
        return text.decode() + (sora_metrics.render() if sora_metrics is not None else "")


class SessionObserver:
    """One session's figures. Callable with each engine event; `close()` is idempotent."""

    def __init__(self, metrics: ServerMetrics, door: str) -> None:
        self._metrics = metrics
        self.door = door
        self.closed = False
        self._turns: set[str] = set()
        metrics.sessions.labels(door).inc()
        metrics.sessions_active.labels(door).inc()

    def __call__(self, event: ev.Event) -> None:
        m, door = self._metrics, self.door
        if isinstance(event, ev.InputCommitted | ev.TranscriptCompleted):
            # A conversation commits each turn; a transcription session only completes it. Count each item once.
            if event.item_id not in self._turns:
                self._turns.add(event.item_id)
                m.turns.labels(door).inc()
        elif isinstance(event, ev.ResponseDone):
            m.responses.labels(door, event.status).inc()
        elif isinstance(event, ev.AudioInterrupted):
            m.barge_ins.labels(door).inc()
        elif isinstance(event, ev.ResponseTiming):
            for histogram, ms in (
                (m.response_latency, event.total_ms),
                (m.turn_end, event.turn_end_ms),
                (m.stt, event.stt_ms),
                (m.llm_first_token, event.llm_first_token_ms),
                (m.tts_first_audio, event.tts_first_audio_ms),
            ):
                if ms is not None:
                    histogram.labels(door).observe(ms / 1000)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._metrics.sessions_active.labels(self.door).dec()


class _ScrapeTime(Collector):
    """What is read when scraped: pool queues, and dropped frames (the Sora door's from its own counters)."""

    def __init__(self, metrics: ServerMetrics, engines: Engines | None, sora: Any) -> None:
        self._metrics = metrics
        self._engines = engines
        self._sora = sora

    def collect(self) -> Iterator[Any]:
        depth = GaugeMetricFamily("koe_pool_queue_depth", "Inference jobs waiting for a worker.", labels=["pool"])
        active = GaugeMetricFamily("koe_pool_active", "Inference jobs running.", labels=["pool"])
        workers = GaugeMetricFamily("koe_pool_workers", "Workers of the pool.", labels=["pool"])
        done = CounterMetricFamily("koe_pool_jobs_completed", "Inference jobs finished.", labels=["pool"])
        for pool in self._engines.pools() if self._engines is not None else ():
            depth.add_metric([pool.name], pool.depth)
            active.add_metric([pool.name], pool.active)
            workers.add_metric([pool.name], pool.workers)
            done.add_metric([pool.name], pool.completed)
        yield from (depth, active, workers, done)
        yield _asyncio_tasks()
        dropped = CounterMetricFamily(
            "koe_dropped_frames", "Audio frames discarded, by door and reason.", labels=["door", "reason"]
        )
        counts = dict(self._metrics.dropped)
        sora_metrics = getattr(self._sora, "metrics", None)
        if sora_metrics is not None:
            counts[("sora", "malformed")] = counts.get(("sora", "malformed"), 0) + sora_metrics.malformed_packets
        for (door, reason), frames in sorted(counts.items()):
            dropped.add_metric([door, reason], frames)
        yield dropped


def _asyncio_tasks() -> GaugeMetricFamily:
    """Tasks alive on the serving event loop: a count that grows with sessions that ended is a leak
    (`koe bench soak`)."""
    tasks = GaugeMetricFamily("koe_asyncio_tasks", "Asyncio tasks alive in the server's event loop.")
    # Rendered outside a running loop (a test calling render() directly), there is nothing to count.
    with contextlib.suppress(RuntimeError):
        tasks.add_metric([], len(asyncio.all_tasks()))
    return tasks


METRICS = ServerMetrics()


def metrics_routes(settings: Settings, engines: Engines) -> list[BaseRoute]:
    """`GET /metrics`, by the server's access rule (Prometheus sends a key as `authorization: {credentials: …}`)."""

    async def metrics(request: Request) -> Response:
        sora = getattr(request.app.state, "sora", None)
        return Response(METRICS.render(engines, sora), media_type=CONTENT_TYPE)

    return [Route("/metrics", guarded(settings, Kind.API, metrics), methods=["GET"])]
