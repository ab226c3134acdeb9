"""The Sora door's `relay` service: each connection's audio goes to a remote Realtime transcription session.

`RelayService(settings, metrics)` is what `POST /speech` uses when `sora.service = "relay"`. Per Sora connection it
opens a WebSocket to `sora.relay_url` (OpenAI Realtime with `session.type = "transcription"`, or Azure Voice Live
with `sora.relay_kind = "azure"`), decodes the Opus straight to 24 kHz PCM16, appends it, and turns the remote
transcription events into the same results as the `koe` service (`is_final` false for deltas, true once per
utterance, `result_id` = the remote item id). What it sends and reads goes through the Realtime client,
`koe.protocols.realtime.client`.

As the reference gateway does for its upstream services (spec §2.4, §2.6), the response HEADERS wait for the
upstream connect: if it fails, Sora gets that HTTP status (500 when there is none) with an empty body. Audio that
arrives while connecting is kept, not dropped (spec §2.8 #2). At the end of the body the remaining audio is
committed and the final transcripts are awaited for up to `FINAL_WAIT_S`.

Retries are Suzu's settings (spec §2.7): with `sora.max_retry` > 0, a connect that fails (no answer, a timeout, 429
or 5xx) is tried again after `sora.retry_interval_ms`, and a session that drops mid-stream (or sends an `error`
matching `sora.retry_targets`) is replaced at once by a new one, silently: the response stays open, audio that
arrives meanwhile is kept and sent to the new session, and result times go on from where the old session stopped.
The count starts over after a session that heard or transcribed speech (Suzu's starts over after any connect that
succeeds, so an upstream that accepts and then drops every session is reconnected forever); once it is used up,
the connect's status (before the response started) or one error line (after) ends the stream. What a dropped
session had heard but not yet transcribed is lost with it. `koe_sora_relay_retries_total{phase}` counts retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus, WebSocketException

from koe.audio.opus import OpusDecoder, OpusError
from koe.audio.pcm import pcm_to_bytes
from koe.config import SoraSettings
from koe.protocols.realtime import client as rt
from koe.protocols.sora import Packet, SoraRequest
from koe.protocols.sora_results import error_result, koe_result
from koe.server.sora.metrics import SoraMetrics
from koe.server.sora.services.base import ResultSink, ServiceStream
from koe.tasks import stop, within

log = logging.getLogger("koe.sora")

CONNECT_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 2.0
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
"""Refusals worth trying again (busy or failing upstream); any other status is a configuration error."""
FINAL_WAIT_S = 10.0
MAX_BUFFERED_PACKETS = 500
"""10 s of audio kept while the upstream connects; beyond that the connect has failed in all but name."""


class RelayService:
    name = "relay"
    transcribes = False

    def __init__(self, settings: SoraSettings, metrics: SoraMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.connect_budget_s = (settings.max_retry + 1) * CONNECT_TIMEOUT_S + settings.max_retry * (
            settings.retry_interval_ms / 1000
        )
        """The longest the connect phase can take, every retry included."""

    def check(self, request: SoraRequest) -> str | None:
        return None  # the remote service decides which languages it transcribes

    def open(self, request: SoraRequest, sink: ResultSink) -> ServiceStream:
        return _RelayStream(self, request, sink)


@dataclass(frozen=True, slots=True)
class _ConnectFailed:
    status: int
    why: str
    retryable: bool


class _RelayStream:
    defers_response = True

    def __init__(self, service: RelayService, request: SoraRequest, sink: ResultSink) -> None:
        self._service = service
        self._request = request
        self._sink = sink
        self._decoder = OpusDecoder(rt.INPUT_RATE)
        self._socket: ClientConnection | None = None
        self._buffer: list[tuple[str, float]] = []
        """Audio appends (and their ms) kept while no upstream session takes them: connecting, or reconnecting."""
        self._position_ms = 0.0
        """Audio given to upstream sessions so far; a new session's times start here."""
        self._offset_ms = 0.0
        self._committed = False
        self._transcribed = False
        """Whether the current upstream session has heard speech or transcribed any: then it worked."""
        self._texts: dict[str, str] = {}
        self._starts: dict[str, int] = {}
        self._open_items: set[str] = set()
        self._ends: dict[str, int] = {}
        self._done = asyncio.Event()
        self._progress = asyncio.Event()
        self._connect_settled = asyncio.Event()
        self._failed = False
        self._input_ended = False
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run())

    # --- ServiceStream ------------------------------------------------------------------------------------------

    def packet(self, packet: Packet) -> None:
        try:
            pcm = self._decoder.decode(packet.payload)
        except OpusError as exc:
            self._service.metrics.malformed_packets += 1
            self._fail(f"OPUS-DECODE-ERROR: {exc}")
            return
        data = pcm_to_bytes(pcm)
        message, ms = rt.audio_append(data), len(data) * 500.0 / rt.INPUT_RATE
        if self._socket is None:
            if len(self._buffer) >= MAX_BUFFERED_PACKETS:
                self._fail("UPSTREAM-CONNECT-TIMEOUT: audio kept arriving while the upstream did not answer")
                return
            self._buffer.append((message, ms))
            return
        self._send_audio(message, ms)

    async def finish(self) -> None:
        self._input_ended = True
        # The body may end before the upstream answers: its answer (or refusal) still decides the response.
        with contextlib.suppress(TimeoutError):
            await within(self._connect_settled.wait(), self._service.connect_budget_s)
        if self._socket is not None and not self._failed and not self._committed:
            self._committed = True  # (while reconnecting, the new session commits once the kept audio is in)
            self._send(rt.commit())
        with contextlib.suppress(TimeoutError):
            await within(self._until_idle(), FINAL_WAIT_S)
        await self._close()

    def abort(self) -> None:
        self._failed = True
        self._task.cancel()

    # --- the upstream session -----------------------------------------------------------------------------------

    async def _run(self) -> None:
        """Connect, stream, and reconnect as `sora.max_retry` allows (spec §2.7, without Suzu's defects §2.8 #1-3:
        a retried connect never crashes, audio that arrives meanwhile is kept, a silent reconnect writes nothing)."""
        settings = self._service.settings
        retries = 0
        connected = False
        try:
            while True:
                outcome = await self._connect()
                if isinstance(outcome, _ConnectFailed):
                    if outcome.retryable and retries < settings.max_retry:
                        retries += 1
                        self._service.metrics.relay_retry("connect")
                        log.info(
                            "sora relay: %s; trying again in %d ms (%d of sora.max_retry %d)",
                            outcome.why,
                            settings.retry_interval_ms,
                            retries,
                            settings.max_retry,
                        )
                        await asyncio.sleep(settings.retry_interval_ms / 1000)
                        continue
                    if connected:
                        self._fail(f"UPSTREAM-DISCONNECTED: {outcome.why}")
                    else:
                        self._refuse(outcome.status, outcome.why)
                    return
                if not connected:
                    connected = True
                    self._connect_settled.set()
                    self._sink.start_response()
                self._transcribed = False
                dropped = await self._stream(outcome)
                if dropped is None:
                    return
                if self._transcribed:
                    retries = 0  # a session that worked starts the count over (Suzu: any connect that succeeds)
                if retries >= settings.max_retry:
                    self._fail(dropped)
                    return
                retries += 1  # a dropped session is reconnected at once, as Suzu does
                self._service.metrics.relay_retry("stream")
                log.info("sora relay: %s; reconnecting (%d of sora.max_retry %d)", dropped, retries, settings.max_retry)
        finally:
            self._socket = None
            self._connect_settled.set()
            self._done.set()
            self._progress.set()

    async def _connect(self) -> ClientConnection | _ConnectFailed:
        settings = self._service.settings
        key = settings.relay_api_key.get_secret_value() if settings.relay_api_key is not None else None
        headers = rt.upgrade_headers(settings.relay_kind, key)
        try:
            return await within(connect(settings.relay_url, additional_headers=headers), CONNECT_TIMEOUT_S)
        except InvalidStatus as exc:
            status = exc.response.status_code
            return _ConnectFailed(status, f"upstream refused the connection: {exc}", status in RETRYABLE_STATUS)
        except (OSError, TimeoutError, WebSocketException) as exc:
            return _ConnectFailed(500, f"cannot connect to the upstream: {exc or type(exc).__name__}", True)

    async def _stream(self, socket: ClientConnection) -> str | None:
        """One upstream session. Returns why it dropped when a reconnect could carry on; None when the stream is over
        (the input ended, or it failed for good)."""
        settings = self._service.settings
        # A new session counts its audio from 0: its times are offset to the Sora stream's. What the old session
        # had heard but not yet transcribed went with it.
        self._offset_ms = self._position_ms
        self._open_items.clear()
        self._starts.clear()
        self._ends.clear()
        self._texts.clear()
        self._socket = socket
        session = rt.ClientSession(
            respond=False,
            transcription_model=settings.relay_model,
            language=self._request.language_code,
            silence_duration_ms=settings.silence_duration_ms,
        )
        self._send(rt.session_update(settings.relay_kind, session))
        for message, ms in self._buffer:
            self._send_audio(message, ms)
        self._buffer.clear()
        if self._input_ended and not self._committed:
            self._committed = True
            self._send(rt.commit())
        self._progress.set()
        dropped: str | None = None
        try:
            async for frame in socket:
                event = rt.parse_server_event(frame)
                if isinstance(event, rt.UpstreamError) and self._retry_target(event):
                    dropped = f"UPSTREAM-ERROR: {event.code or 'error'}: {event.message}"
                    break
                self._event(event)
                self._progress.set()
                if self._failed:
                    return None
        except rt.RealtimeClientError as exc:
            self._fail(f"UPSTREAM-PROTOCOL-ERROR: {exc}")
            return None
        except WebSocketException as exc:
            dropped = f"UPSTREAM-DISCONNECTED: {exc}"
        else:
            dropped = dropped or "UPSTREAM-DISCONNECTED: the upstream closed the session"
        finally:
            self._socket = None
            with contextlib.suppress(Exception):
                await within(socket.close(), CLOSE_TIMEOUT_S)
        if self._input_ended or self._failed:
            return None  # nothing more will come to send: the results so far are the stream's
        return dropped

    def _retry_target(self, event: rt.UpstreamError) -> bool:
        text = f"{event.code}: {event.message}"
        return any(target in text for target in self._service.settings.retry_targets)

    def _event(self, event: rt.ServerEvent) -> None:
        if isinstance(event, rt.SpeechStarted | rt.TranscriptDelta | rt.TranscriptCompleted):
            self._transcribed = True
        if isinstance(event, rt.SpeechStarted):
            self._starts[event.item_id] = event.audio_start_ms + round(self._offset_ms)
            self._open_items.add(event.item_id)
        elif isinstance(event, rt.SpeechStopped):
            self._open_items.add(event.item_id)
            self._ends[event.item_id] = event.audio_end_ms + round(self._offset_ms)
        elif isinstance(event, rt.TranscriptDelta):
            text = self._texts.get(event.item_id, "") + event.delta
            self._texts[event.item_id] = text
            if self._service.settings.partial_results and text.strip():
                start = self._starts.get(event.item_id, self._session_start_ms())
                self._emit(event.item_id, False, text.strip(), start, self._ends.get(event.item_id, start))
        elif isinstance(event, rt.TranscriptCompleted):
            self._open_items.discard(event.item_id)
            self._texts.pop(event.item_id, None)
            start = self._starts.pop(event.item_id, self._session_start_ms())
            end = self._ends.pop(event.item_id, start)
            self._emit(event.item_id, True, event.transcript.strip(), start, end)
        elif isinstance(event, rt.TranscriptFailed):
            self._open_items.discard(event.item_id)
            self._service.metrics.stream_error("transcript")
            self._sink.emit({**error_result(f"TRANSCRIPTION-FAILED: {event.message}"), "result_id": event.item_id})
        elif isinstance(event, rt.UpstreamError):
            if event.code == "input_audio_buffer_commit_empty":
                return  # the body ended right after an utterance: nothing was left to commit
            self._fail(f"UPSTREAM-ERROR: {event.code or 'error'}: {event.message}")

    def _session_start_ms(self) -> int:
        """Where an item with no `speech_started` (one a commit made) begins: no earlier than the upstream session,
        on the Sora stream's timeline (0 would put a transcript after a reconnect before the ones it follows)."""
        return round(self._offset_ms)

    def _emit(self, item_id: str, final: bool, text: str, start: int, end: int) -> None:
        result: dict[str, Any] = koe_result(
            channel_id=self._request.channel_id,
            connection_id=self._request.connection_id,
            result_id=item_id,
            is_final=final,
            message=text,
            language=self._request.language_code,
            start_ms=start,
            end_ms=max(start, end),
        )
        self._sink.emit(result)

    async def _until_idle(self) -> None:
        # Final transcripts for every utterance the upstream saw (a reconnect still under way included), or the
        # upstream ending the session.
        while (self._open_items or self._socket is None) and not self._done.is_set():
            self._progress.clear()
            await self._progress.wait()

    def _send(self, message: str) -> None:
        socket = self._socket
        if socket is None or self._failed:
            return
        task = asyncio.get_running_loop().create_task(socket.send(message))
        task.add_done_callback(self._sent)

    def _send_audio(self, message: str, ms: float) -> None:
        self._position_ms += ms
        self._send(message)

    def _sent(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None or self._failed:
            return
        if self._service.settings.max_retry:
            return  # the session's reader sees the same disconnect, and reconnects
        self._fail(f"UPSTREAM-DISCONNECTED: {task.exception()}")

    def _refuse(self, status: int, why: str) -> None:
        log.warning("sora relay: %s", why)
        self._failed = True
        self._done.set()
        self._sink.refuse(status if 100 <= status <= 999 else 500)

    def _fail(self, reason: str) -> None:
        if self._failed:
            return
        self._failed = True
        self._sink.fail(reason, "relay")
        asyncio.get_running_loop().create_task(self._close())

    async def _close(self) -> None:
        if self._socket is not None:
            with contextlib.suppress(Exception):
                await self._socket.close()
        if self._task is not asyncio.current_task():
            await stop(self._task, ignore_failure=True)
