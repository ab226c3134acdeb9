"""The one writer of a media connection's outbound frames (server → ACS).

`OutboundWriter(socket, rate)` (any `koe.server.acs.socket.MediaSocket`); `start()` it; `audio(pcm)` queues PCM16
at the stream rate (cut into chunks of at most `CHUNK_MS`), `stop_audio()` drops audio not yet sent and sends
`StopAudio` next, `await close()` at the end. Sends never interleave, and a slow socket never blocks the caller:
audio beyond `MAX_PENDING_MS` is dropped and counted. `sent_ms` is the estimate of how much ACS has been given to
play (it sends no acknowledgement).

While nothing is queued or in flight, a frame goes out at once when the socket can take it without waiting
(`send_now`, the picows listener); otherwise the writer's task sends it, waiting while the socket is backed up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Any

from koe.protocols.acs_outbound import build_audio_data, build_stop_audio
from koe.server.acs.socket import MediaSocket
from koe.server.metrics import METRICS

log = logging.getLogger("koe.server.acs.door")

CHUNK_MS = 100
"""Outbound chunks stay small so a StopAudio overtakes as much unsent audio as possible."""
MAX_PENDING_MS = 120_000
"""Audio queued here, not yet on the socket, beyond which new audio is dropped."""


class OutboundWriter:
    def __init__(self, socket: MediaSocket, rate: int) -> None:
        self.socket = socket
        self.rate = rate
        self._chunk_bytes = rate * CHUNK_MS // 1000 * 2
        self._pending: deque[str | bytes] = deque()
        self._pending_bytes = 0
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._sending = False
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
            if self._idle_now() and self.socket.send_now(build_audio_data(chunk)):
                self.audio_messages += 1
                self.audio_bytes += len(chunk)
                continue
            if self._pending_bytes + len(chunk) > limit:
                self.dropped_bytes += len(pcm) - offset
                METRICS.drop("acs", "send_queue_full", -(-(len(pcm) - offset) // self._chunk_bytes))
                break
            self._pending.append(chunk)
            self._pending_bytes += len(chunk)
        if self._pending:
            self._wake.set()

    def stop_audio(self) -> None:
        """Barge-in: forget unsent audio and tell ACS to flush what it queued."""
        if self._closed:
            return
        self.unsent_flushed_bytes += self._pending_bytes
        self._pending.clear()
        self._pending_bytes = 0
        stop = build_stop_audio()
        if self._idle_now() and self.socket.send_now(stop):
            self.stops += 1
            return
        self._pending.append(stop)
        self._wake.set()

    def send_text(self, text: str) -> None:
        """Any other frame, in order with the audio."""
        if self._closed or (self._idle_now() and self.socket.send_now(text)):
            return
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

    def _idle_now(self) -> bool:
        """Nothing queued and nothing being sent: a frame sent now cannot overtake another."""
        return not self._pending and not self._sending

    async def _run(self) -> None:
        send = self.socket.send_text
        try:
            while not self._closed:
                if not self._pending:
                    self._idle.set()
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                item = self._pending.popleft()
                self._sending = True
                if isinstance(item, bytes):
                    self._pending_bytes -= len(item)
                    await send(build_audio_data(item))
                    self.audio_messages += 1
                    self.audio_bytes += len(item)
                else:
                    if item.startswith('{"Kind":"StopAudio"'):
                        self.stops += 1
                    await send(item)
                self._sending = False
        except Exception as exc:  # the socket went away; the receive loop notices and ends the call
            log.debug("outbound writer stopped: %s", exc)
            self._closed = True
        finally:
            self._sending = False
            self._idle.set()
