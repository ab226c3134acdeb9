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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
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

log = logging.getLogger("koe.sora")

CONNECT_TIMEOUT_S = 10.0
FINAL_WAIT_S = 10.0
MAX_BUFFERED_PACKETS = 500
"""10 s of audio kept while the upstream connects; beyond that the connect has failed in all but name."""


class RelayService:
    name = "relay"
    transcribes = False

    def __init__(self, settings: SoraSettings, metrics: SoraMetrics) -> None:
        self.settings = settings
        self.metrics = metrics

    def check(self, request: SoraRequest) -> str | None:
        return None  # the remote service decides which languages it transcribes

    def open(self, request: SoraRequest, sink: ResultSink) -> ServiceStream:
        return _RelayStream(self, request, sink)


class _RelayStream:
    defers_response = True

    def __init__(self, service: RelayService, request: SoraRequest, sink: ResultSink) -> None:
        self._service = service
        self._request = request
        self._sink = sink
        self._decoder = OpusDecoder(rt.INPUT_RATE)
        self._socket: ClientConnection | None = None
        self._buffer: list[str] = []
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
        message = rt.audio_append(pcm_to_bytes(pcm))
        if self._socket is None:
            if len(self._buffer) >= MAX_BUFFERED_PACKETS:
                self._fail("UPSTREAM-CONNECT-TIMEOUT: audio kept arriving while the upstream did not answer")
                return
            self._buffer.append(message)
            return
        self._send(message)

    async def finish(self) -> None:
        self._input_ended = True
        # The body may end before the upstream answers: its answer (or refusal) still decides the response.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connect_settled.wait(), CONNECT_TIMEOUT_S)
        if self._socket is not None and not self._failed:
            self._send(rt.commit())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._until_idle(), FINAL_WAIT_S)
        await self._close()

    def abort(self) -> None:
        self._failed = True
        self._task.cancel()

    # --- the upstream session -----------------------------------------------------------------------------------

    async def _run(self) -> None:
        settings = self._service.settings
        key = settings.relay_api_key.get_secret_value() if settings.relay_api_key is not None else None
        headers = rt.upgrade_headers(settings.relay_kind, key)
        try:
            socket = await asyncio.wait_for(connect(settings.relay_url, additional_headers=headers), CONNECT_TIMEOUT_S)
        except InvalidStatus as exc:
            self._refuse(exc.response.status_code, f"upstream refused the connection: {exc}")
            return
        except (OSError, TimeoutError, WebSocketException) as exc:
            self._refuse(500, f"cannot connect to the upstream: {exc}")
            return
        finally:
            self._connect_settled.set()
        self._socket = socket
        session = rt.ClientSession(
            respond=False,
            transcription_model=settings.relay_model,
            language=self._request.language_code,
            silence_duration_ms=settings.silence_duration_ms,
        )
        self._send(rt.session_update(settings.relay_kind, session))
        self._sink.start_response()
        for message in self._buffer:
            self._send(message)
        self._buffer.clear()
        try:
            async for frame in socket:
                self._event(rt.parse_server_event(frame))
                self._progress.set()
                if self._failed:
                    break
        except rt.RealtimeClientError as exc:
            self._fail(f"UPSTREAM-PROTOCOL-ERROR: {exc}")
        except WebSocketException as exc:
            if not self._input_ended:
                self._fail(f"UPSTREAM-DISCONNECTED: {exc}")
        else:
            if not self._input_ended and not self._failed:
                self._fail("UPSTREAM-DISCONNECTED: the upstream closed the session")
        finally:
            self._done.set()
            self._progress.set()

    def _event(self, event: rt.ServerEvent) -> None:
        if isinstance(event, rt.SpeechStarted):
            self._starts[event.item_id] = event.audio_start_ms
            self._open_items.add(event.item_id)
        elif isinstance(event, rt.SpeechStopped):
            self._open_items.add(event.item_id)
            self._ends[event.item_id] = event.audio_end_ms
        elif isinstance(event, rt.TranscriptDelta):
            text = self._texts.get(event.item_id, "") + event.delta
            self._texts[event.item_id] = text
            if self._service.settings.partial_results and text.strip():
                start = self._starts.get(event.item_id, 0)
                self._emit(event.item_id, False, text.strip(), start, self._ends.get(event.item_id, start))
        elif isinstance(event, rt.TranscriptCompleted):
            self._open_items.discard(event.item_id)
            self._texts.pop(event.item_id, None)
            start = self._starts.pop(event.item_id, 0)
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
        # Final transcripts for every utterance the upstream saw, or the upstream ending the session.
        while self._open_items and not self._done.is_set():
            self._progress.clear()
            await self._progress.wait()

    def _send(self, message: str) -> None:
        socket = self._socket
        if socket is None or self._failed:
            return
        task = asyncio.get_running_loop().create_task(socket.send(message))
        task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None and not self._failed:
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
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
