"""The one writer of a media connection's outbound frames (server → ACS).

`OutboundWriter(websocket, rate)`; `start()` it; `audio(pcm)` queues PCM16 at the stream rate (cut into chunks of
at most `CHUNK_MS`), `stop_audio()` drops audio not yet sent and sends `StopAudio` next, `await close()` at the end.
Sends never interleave, and a slow socket never blocks the caller: audio beyond `MAX_PENDING_MS` is dropped and
counted. `sent_ms` is the estimate of how much ACS has been given to play (it sends no acknowledgement).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Any

from starlette.websockets import WebSocket

from koe.protocols.acs_outbound import build_audio_data, build_stop_audio
from koe.server.metrics import METRICS

log = logging.getLogger("koe.server.acs")

CHUNK_MS = 100
"""Outbound chunks stay small so a StopAudio overtakes as much unsent audio as possible."""
MAX_PENDING_MS = 120_000
"""Audio queued here, not yet on the socket, beyond which new audio is dropped."""


class OutboundWriter:
    def __init__(self, websocket: WebSocket, rate: int) -> None:
        self.websocket = websocket
        self.rate = rate
        self._chunk_bytes = rate * CHUNK_MS // 1000 * 2
        self._pending: deque[str | bytes] = deque()
        self._pending_bytes = 0
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.audio_messages = 0
        self.audio_bytes = 0
        self.stops = 0
        self.dropped_bytes = 0
        self.unsent_flushed_bytes = 0

    @property
    def sent_ms(self) -> float:
        return self.audio_bytes * 500.0 / self.rate

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="acs-outbound-writer")

    def audio(self, pcm: bytes) -> None:
        if self._closed or not pcm:
            return
        limit = MAX_PENDING_MS * self.rate // 1000 * 2
        for offset in range(0, len(pcm), self._chunk_bytes):
            chunk = pcm[offset : offset + self._chunk_bytes]
            if self._pending_bytes + len(chunk) > limit:
                self.dropped_bytes += len(pcm) - offset
                METRICS.drop("acs", "send_queue_full", -(-(len(pcm) - offset) // self._chunk_bytes))
                break
            self._pending.append(chunk)
            self._pending_bytes += len(chunk)
        self._wake.set()

    def stop_audio(self) -> None:
        """Barge-in: forget unsent audio and tell ACS to flush what it queued."""
        if self._closed:
            return
        self.unsent_flushed_bytes += self._pending_bytes
        self._pending.clear()
        self._pending_bytes = 0
        self._pending.append(build_stop_audio())
        self._wake.set()

    def send_text(self, text: str) -> None:
        """Any other frame, in order with the audio."""
        if not self._closed:
            self._pending.append(text)
            self._wake.set()

    async def drain(self) -> None:
        """Wait until everything queued so far is on the socket (or the socket is gone)."""
        if self._pending and not self._closed:
            self._idle.clear()
            await self._idle.wait()

    async def close(self) -> None:
        self._closed = True
        self._wake.set()
        self._idle.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    def stats(self) -> dict[str, Any]:
        return {
            "audio_messages": self.audio_messages,
            "audio_ms": round(self.sent_ms, 1),
            "stop_audio": self.stops,
            "dropped_ms": round(self.dropped_bytes * 500.0 / self.rate, 1),
        }

    async def _run(self) -> None:
        send = self.websocket.send_text
        try:
            while not self._closed:
                if not self._pending:
                    self._idle.set()
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                item = self._pending.popleft()
                if isinstance(item, bytes):
                    self._pending_bytes -= len(item)
                    await send(build_audio_data(item))
                    self.audio_messages += 1
                    self.audio_bytes += len(item)
                else:
                    if item.startswith('{"Kind":"StopAudio"'):
                        self.stops += 1
                    await send(item)
        except Exception as exc:  # the socket went away; the receive loop notices and ends the call
            log.debug("outbound writer stopped: %s", exc)
            self._closed = True
        finally:
            self._idle.set()
