"""The ACS door's bridge mode: the call's audio goes to a remote Realtime endpoint (Azure Voice Live, OpenAI
Realtime GA or beta, or koe's own Realtime door), and the remote's spoken replies come back to the call, as in the
ACS + Azure OpenAI quickstart.

Built by `koe.server.acs.modes.MODES` from `acs.bridge` (url, api_key, dialect, instructions, voice). On start it
connects and sends `session.update` (server VAD, PCM16 at 24 kHz, input transcription); each inbound frame
(unmixed channels mixed per timestamp) is resampled to 24 kHz and sent as `input_audio_buffer.append`. Reply audio
(`response.audio.delta` or `response.output_audio.delta`) is resampled to the stream's rate and sent as outbound
`AudioData`; the remote's `input_audio_buffer.speech_started` becomes `StopAudio` at once. Transcripts and response
ends are published to the call registry.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import ssl
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from koe.audio.mix import mix
from koe.audio.resample import Resampler
from koe.protocols.acs import AudioData, DtmfData
from koe.server.acs.modes.base import ModeContext, ModeUnavailable

log = logging.getLogger("koe.server.acs.door")

REALTIME_RATE = 24000
"""Realtime `pcm16` / `audio/pcm` is 24 kHz mono."""
CONNECT_TIMEOUT_S = 10.0
MAX_REMOTE_MESSAGE_BYTES = 16 * 1024 * 1024
_AUDIO_DELTAS = ("response.audio.delta", "response.output_audio.delta")
_REPLY_TRANSCRIPTS = ("response.audio_transcript.done", "response.output_audio_transcript.done")


class BridgePipeline:
    def __init__(self, context: ModeContext) -> None:
        self.context = context
        self.bridge = context.settings.acs.bridge
        self._remote: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._to_remote = Resampler(context.rate, REALTIME_RATE)
        self._from_remote = Resampler(REALTIME_RATE, context.rate)
        self._stamp = ""
        self._group: list[np.ndarray] = []
        self._outbox: asyncio.Queue[str | None] = asyncio.Queue()
        self._sender: asyncio.Task[None] | None = None
        self._unflushed = False

    async def start(self) -> None:
        headers = {"OpenAI-Beta": "realtime=v1"} if self.bridge.dialect == "openai-beta" else {}
        if self.bridge.api_key is not None:
            key = self.bridge.api_key.get_secret_value()
            headers |= {"api-key": key, "Authorization": f"Bearer {key}"}
        context = None
        if self.bridge.url.startswith("wss://"):
            context = ssl.create_default_context(cafile=str(self.bridge.ca_file) if self.bridge.ca_file else None)
        try:
            self._remote = await connect(
                self.bridge.url,
                additional_headers=headers,
                ssl=context,
                open_timeout=CONNECT_TIMEOUT_S,
                max_size=MAX_REMOTE_MESSAGE_BYTES,
                compression=None,
                proxy=None,
            )
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise ModeUnavailable(f"cannot reach the bridge endpoint {self.bridge.url}: {exc}") from exc
        await self._remote.send(json.dumps(self._session_update()))
        self._reader = asyncio.create_task(self._read(), name=f"acs-bridge-{self.context.call_id}")
        self._sender = asyncio.create_task(self._send(), name=f"acs-bridge-send-{self.context.call_id}")

    def _session_update(self) -> dict[str, Any]:
        silence = self.context.settings.acs.silence_duration_ms
        turns = {"type": "server_vad", "silence_duration_ms": silence}
        if self.bridge.dialect == "openai":  # GA: the nested session
            output: dict[str, Any] = {"format": {"type": "audio/pcm", "rate": REALTIME_RATE}}
            if self.bridge.voice:
                output["voice"] = self.bridge.voice
            session: dict[str, Any] = {
                "type": "realtime",
                "output_modalities": ["audio"],
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcm", "rate": REALTIME_RATE},
                        "turn_detection": turns,
                        "transcription": {"model": "whisper-1"},
                    },
                    "output": output,
                },
            }
        else:  # beta and Voice Live: the flat session
            session = {
                "modalities": ["text", "audio"],
                "input_audio_format": "pcm16",
                "output_audio_format": "pcm16",
                "turn_detection": turns,
                "input_audio_transcription": {"model": "whisper-1"},
            }
            if self.bridge.voice:
                session["voice"] = self.bridge.voice
        if self.bridge.instructions:
            session["instructions"] = self.bridge.instructions
        return {"type": "session.update", "session": session}

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
            audio = base64.b64encode(np.asarray(converted, dtype="<i2").tobytes()).decode("ascii")
            self._outbox.put_nowait(json.dumps({"type": "input_audio_buffer.append", "audio": audio}))

    def dtmf(self, frame: DtmfData) -> None:
        return None

    async def finish(self, hung_up: bool) -> None:
        if self._group:
            self._forward(self._group)
            self._group = []
        self._outbox.put_nowait(None)
        if self._sender is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._sender, 5.0)
        if self._remote is not None:
            with contextlib.suppress(Exception):
                await self._remote.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError, Exception):
                await asyncio.wait_for(self._reader, 5.0)

    async def _send(self) -> None:
        assert self._remote is not None
        with contextlib.suppress(ConnectionClosed):
            while (message := await self._outbox.get()) is not None:
                await self._remote.send(message)

    async def _read(self) -> None:
        assert self._remote is not None
        try:
            async for raw in self._remote:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    self._on_remote(json.loads(raw))
        except ConnectionClosed as exc:
            log.info("bridge endpoint closed: %s", exc)

    def _on_remote(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        publish = self.context.publish
        if kind in _AUDIO_DELTAS:
            pcm = np.frombuffer(base64.b64decode(event["delta"]), dtype="<i2")
            out = self._from_remote.process(pcm)
            if out.size:
                self.context.writer.audio(np.asarray(out, dtype="<i2").tobytes())
                self._unflushed = True
        elif kind == "input_audio_buffer.speech_started":
            if self._unflushed:
                self.context.writer.stop_audio()  # barge-in: flush what ACS still has queued
                self._unflushed = False
                publish({"type": "barge_in", "source": "bridge"})
            publish({"type": "speech.started", "participant": None, "item_id": event.get("item_id", "")})
        elif kind == "input_audio_buffer.speech_stopped":
            publish({"type": "speech.stopped", "participant": None, "item_id": event.get("item_id", "")})
        elif kind == "conversation.item.input_audio_transcription.completed":
            publish({"type": "transcript.completed", "participant": None, "item_id": event.get("item_id", ""),
                     "text": str(event.get("transcript", "")).strip()})  # fmt: skip
        elif kind in _REPLY_TRANSCRIPTS:
            publish({"type": "response.text", "response_id": event.get("response_id"), "text": event.get("transcript")})
        elif kind == "response.created":
            publish({"type": "response.started", "response_id": (event.get("response") or {}).get("id")})
        elif kind == "response.done":
            response = event.get("response") or {}
            details = response.get("status_details") or {}
            publish({"type": "response.done", "response_id": response.get("id"), "status": response.get("status"),
                     "reason": details.get("reason")})  # fmt: skip
        elif kind == "error":
            error = event.get("error") or {}
            publish({"type": "error", "code": error.get("code") or "bridge_error", "message": error.get("message")})
