"""The Sora door's `koe` service: each connection's Opus is decoded and transcribed by a voice `Session`.

`KoeService(settings, engines, metrics)` is what `POST /speech` uses when `sora.service = "koe"`. `check()` refuses
a language the installed STT model does not hear (`koe.server.language`) before any audio is read: a 400, as for a
missing code, whose JSON `reason` starts with Suzu's `UNSUPPORTED-LANGUAGE-CODE`. The header's BCP-47 code
(`ja-JP`, `zh-TW`) is the session's language, and every result carries it; with `auto`, each final result carries
the language detected (Whisper's code, `ja`). `open()` starts one transcribe-mode `Session` per
connection. Packets are decoded by libopus straight to 16 kHz (the engine rate, so no separate resampling step), and
the session's VAD and streaming STT turn them into results:

- a partial result (`is_final: false`) for every `TranscriptDelta`, when `sora.partial_results` is on;
- a final result (`is_final: true`) for every `TranscriptCompleted`, one per utterance;
- for a failed utterance, `{"type":"error","reason":"TRANSCRIPTION-FAILED: …","result_id":…}`, and the stream goes
  on (only stream-level errors end a response).

`result_id` is the session's item id, shared by an utterance's partials and its final result. Times are ms on the
connection's audio timeline (its first packet is 0; injected silent packets count, so the timeline follows wall time
through Sora's idle gaps).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import replace
from typing import Any

from koe.audio.opus import OpusDecoder, OpusError
from koe.audio.pcm import ENGINE_RATE
from koe.config import SoraSettings
from koe.engines.base import EngineUnavailable
from koe.engines.registry import Engines
from koe.languages import AUTO, client_language
from koe.protocols.sora import Packet, SoraRequest
from koe.protocols.sora_results import error_result, koe_result
from koe.server.calls.events import call_event
from koe.server.language import UnsupportedLanguage, session_language
from koe.server.metrics import METRICS
from koe.server.sora.metrics import SoraMetrics
from koe.server.sora.services.base import ResultSink, ServiceStream
from koe.voice import events as ev
from koe.voice.config import SessionConfig, TurnDetection
from koe.voice.session import Session

log = logging.getLogger("koe.sora")

UNSUPPORTED_LANGUAGE_CODE = "UNSUPPORTED-LANGUAGE-CODE"
"""Suzu's error name for a language its service cannot transcribe (spec §2.8), first in the refusal's reason."""
BACKLOG_CHECK_S = 0.1
PAUSE_DEPTH = 2
"""STT jobs waiting (not running) at which partial results pause."""
RESUME_CALM_S = 1.0
WALL_CLOCK_PACKETS = 3000
"""Arrival times kept per stream to measure final-result latency: 60 s of 20 ms packets."""


class KoeService:
    name = "koe"
    transcribes = True

    def __init__(self, settings: SoraSettings, engines: Engines | None, metrics: SoraMetrics) -> None:
        self.settings = settings
        self.engines = engines
        self.metrics = metrics
        self.streams: set[_SpeechStream] = set()
        self.partials_paused = False
        self._calm_since = 0.0
        self._watch: asyncio.TimerHandle | None = None

    def check(self, request: SoraRequest) -> str | None:
        if self.engines is None:
            raise EngineUnavailable("no engines are loaded")
        stt = self.engines.require("stt")
        self.engines.require("vad")
        try:
            session_language(request.language_code, stt)
        except UnsupportedLanguage as exc:
            return f"{UNSUPPORTED_LANGUAGE_CODE}: {exc}"
        return None

    def open(self, request: SoraRequest, sink: ResultSink) -> ServiceStream:
        assert self.engines is not None
        stream = _SpeechStream(self, request, sink)
        self.streams.add(stream)
        if self._watch is None and self.settings.partial_results:
            self._watch = asyncio.get_running_loop().call_later(BACKLOG_CHECK_S, self._check_backlog)
        return stream

    def closed(self, stream: _SpeechStream) -> None:
        self.streams.discard(stream)
        stream.observed.close()

    def _check_backlog(self) -> None:
        """Partial results are best effort: while transcriptions queue up, they pause, so final results stay fast.

        A partial costs a whole transcription of the utterance so far, and the STT pool runs them in order with
        the final ones; with many speakers the partials alone can fill it. Paused when `PAUSE_DEPTH` jobs wait,
        resumed after `RESUME_CALM_S` with none waiting.
        """
        self._watch = None
        if not self.streams or self.engines is None:
            return
        pool = self.engines.stt.pool if self.engines.stt is not None else None
        depth = pool.depth if pool is not None else 0
        now = time.monotonic()
        if depth:
            self._calm_since = now
        paused = depth >= PAUSE_DEPTH or (self.partials_paused and now - self._calm_since < RESUME_CALM_S)
        if paused != self.partials_paused:
            self.partials_paused = paused
            self.metrics.partials_paused = int(paused)
            for stream in self.streams:
                stream.set_partials(not paused)
        self._watch = asyncio.get_running_loop().call_later(BACKLOG_CHECK_S, self._check_backlog)


class _SpeechStream:
    def __init__(self, service: KoeService, request: SoraRequest, sink: ResultSink) -> None:
        self._service = service
        self._request = request
        self._sink = sink
        self._decoder = OpusDecoder(ENGINE_RATE)
        self._samples = 0
        self._arrivals: deque[tuple[int, float]] = deque(maxlen=WALL_CLOCK_PACKETS)
        self._starts: dict[str, int] = {}
        language = client_language(request.language_code)  # check() refused what it cannot read
        self._detects = language is not None and language.lower() == AUTO
        config = SessionConfig(
            mode="transcribe",
            language=language,
            turn_detection=TurnDetection(type="server_vad", silence_duration_ms=service.settings.silence_duration_ms),
            partial_results=service.settings.partial_results,
            echo_cancellation=False,  # nothing is played back to a Sora connection
        )
        assert service.engines is not None
        self.observed = METRICS.session("sora")
        self._session = Session(service.engines, config, observer=self.observed)
        if service.partials_paused:
            self.set_partials(False)
        self._events = asyncio.get_running_loop().create_task(self._read_events())

    def packet(self, packet: Packet) -> None:
        try:
            pcm = self._decoder.decode(packet.payload)
        except OpusError as exc:
            self._service.metrics.malformed_packets += 1
            self._sink.fail(f"OPUS-DECODE-ERROR: {exc}", "opus")
            return
        self._samples += pcm.size
        self._arrivals.append((self._samples * 1000 // ENGINE_RATE, time.perf_counter()))
        self._session.append_audio(pcm, ENGINE_RATE)

    def set_partials(self, on: bool) -> None:
        # Only the partial flag changes; `Session.update()` would also reconfigure the input pipeline mid-turn.
        self._session.config = replace(self._session.config, partial_results=on)

    async def finish(self) -> None:
        try:
            await self._session.end_input()
            await self._events
        finally:
            self._service.closed(self)

    def abort(self) -> None:
        self._service.closed(self)
        self._events.cancel()
        task = asyncio.get_running_loop().create_task(self._session.close())
        task.add_done_callback(_ignore_result)

    async def _read_events(self) -> None:
        request = self._request
        try:
            async for event in self._session.events():
                self._publish(event)
                if isinstance(event, ev.SpeechStarted):
                    self._starts[event.item_id] = event.audio_start_ms
                elif isinstance(event, ev.TranscriptDelta):
                    if self._service.settings.partial_results and event.text:
                        start = self._starts.get(event.item_id, 0)
                        self._emit(event.item_id, False, event.text, start, max(start, self._now_ms()))
                elif isinstance(event, ev.TranscriptCompleted):
                    self._starts.pop(event.item_id, None)
                    self._latency(event.audio_end_ms)
                    language = event.language if self._detects else request.language_code
                    self._emit(event.item_id, True, event.text, event.audio_start_ms, event.audio_end_ms, language)
                elif isinstance(event, ev.TranscriptFailed):
                    self._service.metrics.stream_error("transcript")
                    failure = error_result(f"TRANSCRIPTION-FAILED: {event.message}")
                    self._sink.emit({**failure, "result_id": event.item_id})
                elif isinstance(event, ev.Error):
                    log.warning("sora: voice session error %s: %s", event.error.kind, event.error.message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the engine failed for this stream: say so, end this stream only
            log.exception("sora: the voice session failed")
            self._sink.fail(f"ENGINE-ERROR: {exc}", "engine")

    def _publish(self, event: ev.Event) -> None:
        item = call_event(event, None if self._detects else self._request.language_code)
        if item is not None:
            self._sink.publish(item)

    def _emit(self, item_id: str, final: bool, text: str, start: int, end: int, language: str | None = None) -> None:
        result: dict[str, Any] = koe_result(
            channel_id=self._request.channel_id,
            connection_id=self._request.connection_id,
            result_id=item_id,
            is_final=final,
            message=text,
            language=language or self._request.language_code,
            start_ms=int(start),
            end_ms=int(end),
        )
        self._sink.emit(result)

    def _now_ms(self) -> int:
        return self._samples * 1000 // ENGINE_RATE

    def _latency(self, audio_end_ms: int) -> None:
        # The wall time at which the utterance's last packet arrived, from the packet that covered audio_end_ms.
        for end_ms, arrived in self._arrivals:
            if end_ms >= audio_end_ms:
                self._service.metrics.final_latency(time.perf_counter() - arrived)
                return


def _ignore_result(task: asyncio.Task[Any]) -> None:
    with contextlib.suppress(asyncio.CancelledError, Exception):
        task.result()
