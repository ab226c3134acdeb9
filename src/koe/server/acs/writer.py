"""The one writer of a media connection's outbound frames (server → ACS).

`OutboundWriter(socket, rate)` (any `koe.server.acs.socket.MediaSocket`); `start()` it; `audio(pcm)` queues PCM16
at the stream rate (cut into `OutboundAudioData` chunks of at most `CHUNK_MS`), `stop_audio()` drops audio not yet
sent and sends `StopAudio` next, `await close()` at the end. Every item queued is a typed message of
`koe.protocols.acs_outbound`, rendered by its `encode()` as it goes out. Sends never interleave, and a slow socket
never blocks the caller: audio beyond `MAX_PENDING_MS` (or `limit_bytes`) is dropped and counted, and a send that
makes no progress for `stall_s` stops the writer and tells `on_stall` (the door then ends the call). `sent_ms` is the
estimate of how much ACS has been given to play (it sends no acknowledgement).

While nothing is queued or in flight, a frame goes out at once when the socket can take it without waiting
(`send_now`, the picows listener); otherwise the writer's task sends it, waiting while the socket is backed up.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

from koe.protocols.acs_outbound import STOP_AUDIO, OutboundAudioData, OutboundMessage, StopAudio, encode
from koe.server.acs.socket import MediaSocket
from koe.server.metrics import METRICS
from koe.server.outbox import SendStalled, send_within
from koe.tasks import stop

log = logging.getLogger("koe.server.acs.door")

CHUNK_MS = 100
"""Outbound chunks stay small so a StopAudio overtakes as much unsent audio as possible."""
MAX_PENDING_MS = 120_000
"""Audio queued here, not yet on the socket, beyond which new audio is dropped."""


class OutboundWriter:
    def __init__(
        self,
        socket: MediaSocket,
        rate: int,
        *,
        stall_s: float | None = None,
        limit_bytes: int | None = None,
        on_stall: Callable[[str], None] | None = None,
    ) -> None:
        """`stall_s`: a send that makes no progress for this long means the peer stopped reading: the writer stops
        and tells `on_stall` why. `limit_bytes`: audio queued beyond it is dropped (at most `MAX_PENDING_MS`)."""
        self.socket = socket
        self.rate = rate
        self._stall_s = stall_s
        self._on_stall = on_stall
        self._limit_bytes = MAX_PENDING_MS * rate // 1000 * 2
        if limit_bytes is not None:
            self._limit_bytes = min(self._limit_bytes, limit_bytes)
        self._chunk_bytes = rate * CHUNK_MS // 1000 * 2
        self._pending: deque[OutboundMessage] = deque()
        self._pending_bytes = 0
        self._wake = asyncio.Event()
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
        limit = self._limit_bytes
        for offset in range(0, len(pcm), self._chunk_bytes):
            chunk = OutboundAudioData(pcm[offset : offset + self._chunk_bytes])
            size = len(chunk.data)
            if self._idle_now() and self.socket.send_now(encode(chunk)):
                self.audio_messages += 1
                self.audio_bytes += size
                continue
            if self._pending_bytes + size > limit:
                self.dropped_bytes += len(pcm) - offset
                METRICS.drop("acs", "send_queue_full", -(-(len(pcm) - offset) // self._chunk_bytes))
                break
            self._pending.append(chunk)
            self._pending_bytes += size
        if self._pending:
            self._wake.set()

    def stop_audio(self) -> None:
        """Barge-in: forget unsent audio and tell ACS to flush what it queued."""
        if self._closed:
            return
        self.unsent_flushed_bytes += self._pending_bytes
        self._pending.clear()
        self._pending_bytes = 0
        if self._idle_now() and self.socket.send_now(encode(STOP_AUDIO)):
            self.stops += 1
            return
        self._pending.append(STOP_AUDIO)
        self._wake.set()

    async def close(self) -> None:
        self._closed = True
        self._wake.set()
        if self._task is not None:
            await stop(self._task, ignore_failure=True)

    def _idle_now(self) -> bool:
        """Nothing queued and nothing being sent: a frame sent now cannot overtake another."""
        return not self._pending and not self._sending

    async def _run(self) -> None:
        stall_s = self._stall_s

        async def send(text: str) -> None:
            if stall_s is None:
                await self.socket.send_text(text)
            else:
                await send_within(self.socket.send_text(text), stall_s)

        try:
            while not self._closed:
                if not self._pending:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                message = self._pending.popleft()
                self._sending = True
                if isinstance(message, StopAudio):
                    await send(encode(message))
                    self.stops += 1
                else:
                    self._pending_bytes -= len(message.data)
                    await send(encode(message))
                    self.audio_messages += 1
                    self.audio_bytes += len(message.data)
                self._sending = False
        except SendStalled as exc:  # the peer stopped reading: nothing more can reach it
            log.warning("outbound writer stopped: %s", exc)
            METRICS.send_stalls.labels("acs").inc()
            self._closed = True
            self._pending.clear()
            self._pending_bytes = 0
            if self._on_stall is not None:
                self._on_stall(str(exc))
        except Exception as exc:  # the socket went away; the receive loop notices and ends the call
            log.debug("outbound writer stopped: %s", exc)
            self._closed = True
        finally:
            self._sending = False
