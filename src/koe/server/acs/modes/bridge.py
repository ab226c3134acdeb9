"""The ACS door's bridge mode: the call's audio goes to a remote Realtime endpoint (Azure Voice Live, OpenAI
Realtime GA or beta, or koe's own Realtime door), and the remote's spoken replies come back to the call, as in the
ACS + Azure OpenAI quickstart.

Built by `koe.server.acs.modes.MODES` from `acs.bridge` (url, api_key, dialect, instructions, voice). Everything it
says to the remote and reads back goes through the Realtime client, `koe.protocols.realtime.client`. On start it
connects and sends `session.update` (server VAD, PCM16 at 24 kHz, input transcription); each inbound frame
(unmixed channels mixed per timestamp) is resampled to 24 kHz and sent as `input_audio_buffer.append`. Reply audio
(`response.audio.delta` or `response.output_audio.delta`) is resampled to the stream's rate and sent as outbound
`AudioData`, paced as koe's own replies are (never more than `OUTPUT_LEAD_MS` ahead of the call's playback, on a
`PlaybackClock`): a remote that sends its reply in a burst, as OpenAI's does, would otherwise leave the whole reply
queued in ACS, which plays whatever it has been sent. The remote's `input_audio_buffer.speech_started` drops what
was not sent yet and becomes `StopAudio` at once. Transcripts and response
ends are published to the call registry. A frame the client cannot read is logged and counted
(`koe_dropped_frames{door="acs",reason="bridge_unreadable"}`), and the call goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from koe.audio.mix import mix
from koe.audio.resample import Resampler
from koe.languages import AUTO
from koe.protocols.acs import AudioData, DtmfData
from koe.protocols.realtime import client as rt
from koe.server.acs.modes.base import ModeContext, ModeUnavailable
from koe.server.metrics import METRICS
from koe.tasks import stop, within
from koe.voice.playback import OUTPUT_LEAD_MS, PlaybackClock

log = logging.getLogger("koe.server.acs.door")

CONNECT_TIMEOUT_S = 10.0
LOG_EVERY_UNREADABLE = 100
"""After the first few, log one unreadable remote frame in this many, so a broken remote cannot flood the log."""
_FIRST_UNREADABLE_LOGGED = 5
PACED_CHUNK_MS = 100
"""The remote's reply audio goes to the call in pieces of this length, each when the lead has room for it."""
_BRIDGE_ITEM = "bridge"


class BridgePipeline:
    def __init__(self, context: ModeContext) -> None:
        self.context = context
        self.bridge = context.settings.acs.bridge
        self._remote: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._to_remote = Resampler(context.rate, rt.INPUT_RATE)
        self._from_remote = Resampler(rt.INPUT_RATE, context.rate)
        self._stamp = ""
        self._group: list[np.ndarray] = []
        self._outbox: asyncio.Queue[str | None] = asyncio.Queue()
        self._sender: asyncio.Task[None] | None = None
        self._unflushed = False
        self._unreadable = 0
        self._playback = PlaybackClock()
        self._reply: asyncio.Queue[np.ndarray] = asyncio.Queue()
        self._speaker: asyncio.Task[None] | None = None
        self._flushes = 0

    async def start(self) -> None:
        key = self.bridge.api_key.get_secret_value() if self.bridge.api_key is not None else None
        context = None
        if self.bridge.url.startswith("wss://"):
            context = ssl.create_default_context(cafile=str(self.bridge.ca_file) if self.bridge.ca_file else None)
        try:
            self._remote = await connect(
                self.bridge.url,
                additional_headers=rt.upgrade_headers(self.bridge.dialect, key),
                ssl=context,
                open_timeout=CONNECT_TIMEOUT_S,
                max_size=rt.MAX_EVENT_BYTES,
                compression=None,
                proxy=None,
            )
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise ModeUnavailable(f"cannot reach the bridge endpoint {self.bridge.url}: {exc}") from exc
        language = self.context.language
        session = rt.ClientSession(
            language=None if language is None or language.lower() == AUTO else language,
            silence_duration_ms=self.context.settings.acs.silence_duration_ms,
            instructions=self.bridge.instructions,
            voice=self.bridge.voice,
        )
        await self._remote.send(rt.session_update(self.bridge.dialect, session))
        self._reader = asyncio.create_task(self._read(), name=f"acs-bridge-{self.context.call_id}")
        self._sender = asyncio.create_task(self._send(), name=f"acs-bridge-send-{self.context.call_id}")
        self._speaker = asyncio.create_task(self._speak(), name=f"acs-bridge-speak-{self.context.call_id}")

    def audio(self, frame: AudioData) -> None:
        pcm = np.frombuffer(frame.data, dtype="<i2") if frame.data else None
        if frame.participant_raw_id is None:
            self._forward([pcm] if pcm is not None else [])
            return
        # Realtime has one input: unmixed channels are mixed per 20 ms tick.
        if frame.timestamp != self._stamp:
            self._forward(self._group)
            self._group = []
            self._stamp = frame.timestamp
        if pcm is not None:
            self._group.append(pcm)

    def _forward(self, chunks: list[np.ndarray]) -> None:
        pcm = mix(chunks) if chunks else np.zeros(self.context.rate // 50, dtype=np.int16)
        converted = self._to_remote.process(pcm)
        if converted.size:
            self._outbox.put_nowait(rt.audio_append(np.asarray(converted, dtype="<i2").tobytes()))

    def dtmf(self, frame: DtmfData) -> None:
        return None

    async def finish(self, hung_up: bool) -> None:
        if self._group:
            self._forward(self._group)
            self._group = []
        self._outbox.put_nowait(None)
        if self._sender is not None:
            with contextlib.suppress(Exception):
                await within(self._sender, 5.0)
        if self._remote is not None:
            with contextlib.suppress(Exception):
                await self._remote.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError, Exception):
                await within(self._reader, 5.0)
        if self._speaker is not None:
            await stop(self._speaker)

    async def _speak(self) -> None:
        """Send the remote's reply audio to the call at the listener's pace."""
        rate = self.context.rate
        while True:
            pcm = await self._reply.get()
            flushes = self._flushes
            await self._playback.wait_room(pcm.size * 1000 / rate, OUTPUT_LEAD_MS)
            if flushes != self._flushes:
                continue  # a barge-in came while this piece waited its turn
            self._playback.sent(None, _BRIDGE_ITEM, pcm, rate)
            self.context.writer.audio(np.asarray(pcm, dtype="<i2").tobytes())
            self._unflushed = True

    async def _send(self) -> None:
        assert self._remote is not None
        with contextlib.suppress(ConnectionClosed):
            while (message := await self._outbox.get()) is not None:
                await self._remote.send(message)

    async def _read(self) -> None:
        assert self._remote is not None
        try:
            async for frame in self._remote:
                self._on_frame(frame)
        except ConnectionClosed as exc:
            log.info("bridge endpoint closed: %s", exc)

    def _on_frame(self, frame: str | bytes) -> None:
        try:
            event = rt.parse_server_event(frame)
        except rt.RealtimeClientError as exc:
            self._unreadable += 1
            METRICS.drop("acs", "bridge_unreadable")
            count = self._unreadable
            if count <= _FIRST_UNREADABLE_LOGGED or count % LOG_EVERY_UNREADABLE == 0:
                log.warning("skipped an unreadable frame from the bridge endpoint (%d so far): %s", count, exc)
            return
        self._on_remote(event)

    def _on_remote(self, event: rt.ServerEvent) -> None:
        publish = self.context.publish
        if isinstance(event, rt.ResponseAudioDelta):
            out = self._from_remote.process(np.frombuffer(event.audio, dtype="<i2"))
            step = self.context.rate * PACED_CHUNK_MS // 1000
            for start in range(0, out.size, step):
                self._reply.put_nowait(out[start : start + step])
        elif isinstance(event, rt.SpeechStarted):
            while not self._reply.empty():  # barge-in: what was not sent yet never will be
                self._reply.get_nowait()
            self._playback.interrupt()
            self._flushes += 1
            if self._unflushed:
                self.context.writer.stop_audio()  # barge-in: flush what ACS still has queued
                self._unflushed = False
                publish({"type": "barge_in", "source": "bridge"})
            publish({"type": "speech.started", "participant": None, "item_id": event.item_id})
        elif isinstance(event, rt.SpeechStopped):
            publish({"type": "speech.stopped", "participant": None, "item_id": event.item_id})
        elif isinstance(event, rt.TranscriptCompleted):
            publish({"type": "transcript.completed", "participant": None, "item_id": event.item_id,
                     "text": event.transcript.strip()})  # fmt: skip
        elif isinstance(event, rt.ResponseAudioTranscriptDone):
            publish({"type": "response.text", "response_id": event.response_id, "text": event.transcript})
        elif isinstance(event, rt.ResponseCreated):
            publish({"type": "response.started", "response_id": event.response_id})
        elif isinstance(event, rt.ResponseDone):
            publish({"type": "response.done", "response_id": event.response_id, "status": event.status,
                     "reason": event.reason})  # fmt: skip
        elif isinstance(event, rt.UpstreamError):
            publish({"type": "error", "code": event.code or "bridge_error", "message": event.message})
