"""The ACS media-streaming client: connects to a transport URL as ACS does and streams a call's audio to it.

Build `MediaOptions` and a `CallAudio` (see `participants`), then `report = await MediaStream(options, audio).run()`.
It sends the handshake headers (and a Bearer JWT when `options.token` is set), `AudioMetadata`, then one 20 ms
`AudioData` per channel per tick, paced at `speed` × real time, with `DtmfData` at the scheduled times. Outbound
`AudioData`/`StopAudio` in any casing feed a real-time playout queue (`Playout`); unknown kinds, binary frames and
bad audio are recorded as violations. `hang_up()` ends the stream from outside (close code 1000 by default).
`drop_at_ms` injects ACS's reconnect fault: the media WebSocket reset mid-call and opened again (`report.reconnects`).
A connection that cannot be opened raises `MediaConnectError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from koe.protocols.acs import FRAME_MS, AudioData, AudioMetadata, DtmfData, encode, frame_bytes, iso_timestamp
from koe.protocols.acs_outbound import (
    OutboundAudioData,
    OutboundFormatError,
    StopAudio,
    UnknownOutbound,
    parse_outbound,
)
from koe.sim.acs.participants import CallAudio, Frame
from koe.sim.acs.playback import BargeIn, Playout
from koe.tasks import within

log = logging.getLogger("koe.sim.acs")

MAX_INBOUND_MESSAGE_BYTES = 2048
"""The official .NET samples read one 2048-byte buffer per message, so every frame must fit in it."""
MAX_OUTBOUND_MESSAGE_BYTES = 8 * 1024 * 1024


class MediaConnectError(Exception):
    """The transport URL could not be reached, or the server refused the WebSocket (`status` says how)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.no_tls = False
        """The TLS handshake failed as it does against a server that speaks no TLS."""


@dataclass
class MediaOptions:
    url: str
    rate: int = 16000
    call_connection_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    correlation_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    subscription_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    bidirectional: bool = True
    enable_dtmf: bool = False
    dtmf: Sequence[tuple[int, str]] = ()
    """(media time in ms, tone) pairs, sent only with `enable_dtmf`."""
    speed: float = 1.0
    """Multiple of real time; 0 or less sends as fast as the socket takes it."""
    token: str | None = None
    downgrade_tls: bool = True
    """Connect `wss://` and `https://` URLs on loopback hosts as `ws://` when the server there speaks no TLS: the
    samples force `wss://` on an app that serves plain HTTP."""
    ca_file: Path | None = None
    linger_ms: int = 0
    """After the audio ends, keep streaming silence until the server's audio has been quiet this long."""
    reply_timeout_ms: int = 0
    """After the audio ends, wait up to this long (streaming silence) for the server to start answering."""
    max_linger_ms: int = 60_000
    close_code: int = 1000
    barge_in: tuple[str, Any] | None = None
    """(raw ID, PCM at the stream rate): a caller who starts talking `barge_in_after_ms` after the server's audio
    begins to play, to interrupt it. The onset counts for the barge-in report."""
    barge_in_after_ms: int = 800
    hang_up_after_playing_ms: int | None = None
    """Hang up this long after the server's audio begins to play (a caller leaving mid-reply)."""
    open_timeout_s: float = 5.0
    drop_at_ms: Sequence[int] = ()
    """Media times at which the media WebSocket is dropped (its TCP connection reset, no close frame, as a network
    failure does) and reopened at once with the same call headers and a fresh `AudioMetadata`, as ACS reconnects."""
    extra_headers: dict[str, str] = field(default_factory=dict)


@dataclass
class MediaReport:
    url: str
    rate: int
    frames_sent: int = 0
    messages_sent: int = 0
    bytes_sent: int = 0
    largest_message_bytes: int = 0
    media_ms: float = 0.0
    wall_s: float = 0.0
    outbound_audio_messages: int = 0
    outbound_audio_bytes: int = 0
    stop_audio: int = 0
    unknown_kinds: dict[str, int] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    playback: dict[str, Any] = field(default_factory=dict)
    barge_ins: list[BargeIn] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""
    closed_by: str = ""
    reconnects: int = 0

    def as_dict(self) -> dict[str, Any]:
        data = {key: value for key, value in self.__dict__.items() if key != "barge_ins"}
        data["barge_ins"] = [
            {
                "participant": b.participant_raw_id,
                "onset_ms": round(b.onset_ms, 1),
                "stop_ms": round(b.stop_ms, 1),
                "latency_ms": round(b.latency_ms, 1),
                "dropped_ms": round(b.dropped_ms, 1),
            }
            for b in self.barge_ins
        ]
        return data


class MediaStream:
    def __init__(self, options: MediaOptions, audio: CallAudio) -> None:
        if audio.rate != options.rate:
            raise ValueError(f"call audio is at {audio.rate} Hz but the stream is {options.rate} Hz")
        self.options = options
        self.audio = audio
        self.playout = Playout(options.rate)
        self.report = MediaReport(options.url, options.rate)
        self.started = asyncio.Event()
        """Set once the socket is open and `AudioMetadata` went out (when ACS reports MediaStreamingStarted)."""
        self._stop = asyncio.Event()
        self._t0 = 0.0
        self._epoch0 = 0.0
        self._ticks_sent = 0
        self._last_outbound_ms = -1e9
        self._closed_by_us = False
        self._barge_start: int | None = None
        self._extra_onsets: list[tuple[int, str]] = []
        self._websocket: ClientConnection
        self._receiver: asyncio.Task[None]
        self._dropping = False

    def hang_up(self, code: int | None = None) -> None:
        if code is not None:
            self.options.close_code = code
        self._stop.set()

    def media_ms(self) -> float:
        """The call's media clock: real time × speed since streaming began (or frames sent, when unpaced)."""
        if self.options.speed <= 0:
            return self._ticks_sent * FRAME_MS
        return (time.monotonic() - self._t0) * 1000.0 * self.options.speed

    async def run(self) -> MediaReport:
        self._websocket = await self._connect()
        started_wall = time.monotonic()
        self._receiver = asyncio.create_task(self._receive(self._websocket))
        try:
            await self._send_all()
        except ConnectionClosed:
            pass
        finally:
            websocket, receiver = self._websocket, self._receiver
            if not receiver.done():
                self._closed_by_us = True
                with contextlib.suppress(Exception):
                    await websocket.close(self.options.close_code)
            with contextlib.suppress(Exception):
                await within(receiver, 5.0)
            receiver.cancel()
            self._finish(websocket, time.monotonic() - started_wall)
        return self.report

    async def _reconnect(self) -> None:
        """Drop the media WebSocket as a network failure would, then open it again, as ACS does."""
        self._dropping = True
        self._websocket.transport.abort()
        with contextlib.suppress(Exception):
            await within(self._receiver, 5.0)
        self._dropping = False
        self._websocket = await self._connect()
        self._receiver = asyncio.create_task(self._receive(self._websocket))
        self.report.reconnects += 1
        await self._send(self._websocket, encode(self._metadata()))

    def _metadata(self) -> AudioMetadata:
        options = self.options
        return AudioMetadata(options.subscription_id, options.rate, length=frame_bytes(options.rate))

    async def _connect(self) -> ClientConnection:
        url, context, plain = self._target()
        try:
            return await self._open(url, context)
        except MediaConnectError as exc:
            if plain is None or not exc.no_tls:
                raise
        return await self._open(plain, None)  # the samples force wss:// on a local app that serves plain HTTP

    async def _open(self, url: str, context: ssl.SSLContext | None) -> ClientConnection:
        headers = {
            "x-ms-call-connection-id": self.options.call_connection_id,
            "x-ms-call-correlation-id": self.options.correlation_id,
            **self.options.extra_headers,
        }
        if self.options.token:
            headers["Authorization"] = f"Bearer {self.options.token}"
        try:
            return await connect(
                url,
                additional_headers=headers,
                ssl=context,
                compression=None,
                max_size=MAX_OUTBOUND_MESSAGE_BYTES,
                open_timeout=self.options.open_timeout_s,
                ping_interval=None,
                proxy=None,
                user_agent_header=None,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            raise MediaConnectError(f"{url} refused the WebSocket with HTTP {status}", status) from exc
        except ssl.SSLCertVerificationError as exc:
            raise MediaConnectError(
                f"cannot open a WebSocket to {url}: its certificate is not trusted ({exc.verify_message}); "
                "give the CA that signed it (--ca-file)"
            ) from exc
        except (ssl.SSLError, ConnectionResetError) as exc:
            error = MediaConnectError(f"cannot open a WebSocket to {url}: TLS failed ({exc}); is it a ws:// URL?")
            error.no_tls = True
            raise error from exc
        except (OSError, TimeoutError, websockets.exceptions.InvalidHandshake) as exc:
            raise MediaConnectError(f"cannot open a WebSocket to {url}: {exc}") from exc

    def _target(self) -> tuple[str, ssl.SSLContext | None, str | None]:
        """(URL, TLS context for wss://, the ws:// URL to fall back on when a loopback server speaks no TLS)."""
        parts = urlsplit(self.options.url)
        scheme = {"https": "wss", "http": "ws"}.get(parts.scheme, parts.scheme)
        loopback = parts.hostname in ("127.0.0.1", "localhost", "::1")
        url = urlunsplit((scheme, parts.netloc, parts.path or "/", parts.query, ""))
        if scheme != "wss":
            return url, None, None
        context = ssl.create_default_context(cafile=str(self.options.ca_file) if self.options.ca_file else None)
        if self.options.ca_file is not None:  # and the system's CAs (or SSL_CERT_FILE's) too
            context.load_default_certs()
        plain = urlunsplit(("ws", parts.netloc, parts.path or "/", parts.query, ""))
        return url, context, plain if self.options.downgrade_tls and loopback else None

    async def _send_all(self) -> None:
        options = self.options
        self._t0 = time.monotonic()
        self._epoch0 = time.time()
        await self._send(self._websocket, encode(self._metadata()))
        self.started.set()
        dtmf = sorted(options.dtmf) if options.enable_dtmf else []
        drops = sorted(options.drop_at_ms)
        tick = 0
        while not self._stop.is_set():
            if tick >= self.audio.ticks and not self._lingering(tick):
                break
            await self._pace(tick)
            at_ms = tick * FRAME_MS
            if drops and drops[0] <= at_ms:
                drops.pop(0)
                await self._reconnect()
            websocket = self._websocket
            self.playout.advance(self.media_ms())
            stamp = iso_timestamp(self._epoch0 + at_ms / 1000.0)
            self._react(tick)
            for frame in self._with_barge_in(tick, self.audio.frames(tick)):
                message = AudioData(frame.pcm, stamp, frame.participant_raw_id, frame.silent)
                await self._send(websocket, encode(message))
                if frame.pcm:
                    self.playout.add_inbound(np.frombuffer(frame.pcm, dtype="<i2"), at_ms)
            while dtmf and dtmf[0][0] <= at_ms:
                _, tone = dtmf.pop(0)
                who = self.audio.raw_ids[0]
                await self._send(websocket, encode(DtmfData(tone, stamp, who)))
            tick += 1
            self._ticks_sent = tick
            self.report.frames_sent = tick

    def _react(self, tick: int) -> None:
        """Start the interrupting speech, or hang up, once the server's audio has played long enough."""
        playing = self.playout.playing_for_ms()
        options = self.options
        if options.barge_in is not None and self._barge_start is None and playing >= options.barge_in_after_ms:
            self._barge_start = tick
            self._extra_onsets.append((tick * FRAME_MS, options.barge_in[0]))
        if options.hang_up_after_playing_ms is not None and playing >= options.hang_up_after_playing_ms:
            self._stop.set()

    def _with_barge_in(self, tick: int, frames: list[Frame]) -> list[Frame]:
        if self._barge_start is None or self.options.barge_in is None:
            return frames
        raw_id, pcm = self.options.barge_in
        size = self.audio.frame_samples
        offset = (tick - self._barge_start) * size
        chunk = np.asarray(pcm[offset : offset + size], dtype=np.int16)
        if not chunk.size:
            return frames
        chunk = np.concatenate((chunk, np.zeros(size - chunk.size, dtype=np.int16)))
        if not self.audio.mixed:
            return [*frames, Frame(raw_id, chunk.tobytes(), False)]
        out = []
        for frame in frames:
            base = np.frombuffer(frame.pcm, dtype="<i2") if frame.pcm else np.zeros(size, dtype=np.int16)
            mixed = np.clip(base.astype(np.int32) + chunk, -32768, 32767).astype("<i2")
            out.append(Frame(frame.participant_raw_id, mixed.tobytes(), False))
        return out

    def _lingering(self, tick: int) -> bool:
        options = self.options
        if (
            max(options.linger_ms, options.reply_timeout_ms) <= 0
            or (tick - self.audio.ticks) * FRAME_MS >= options.max_linger_ms
        ):
            return False
        barge = options.barge_in
        if barge is not None and self._barge_start is not None:
            spoken = (tick - self._barge_start) * self.audio.frame_samples
            if spoken < len(barge[1]):
                return True  # the interruption is still being spoken
        audio_end = self.audio.ticks * FRAME_MS
        if self._last_outbound_ms < audio_end and self.media_ms() - audio_end < options.reply_timeout_ms:
            return True  # still waiting for the server to start answering
        quiet_since = max(self._last_outbound_ms, audio_end)
        return self.playout.queued_ms > 0 or self.media_ms() - quiet_since < options.linger_ms

    async def _pace(self, tick: int) -> None:
        if self.options.speed <= 0:
            await asyncio.sleep(0)
            return
        due = self._t0 + tick * FRAME_MS / 1000.0 / self.options.speed
        delay = due - time.monotonic()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await within(self._stop.wait(), delay)

    async def _send(self, websocket: ClientConnection, text: str) -> None:
        size = len(text.encode("utf-8"))
        if size >= MAX_INBOUND_MESSAGE_BYTES:
            raise AssertionError(f"simulator bug: a {size}-byte frame would break the .NET samples' 2048-byte reads")
        await websocket.send(text)
        self.report.messages_sent += 1
        self.report.bytes_sent += size
        self.report.largest_message_bytes = max(self.report.largest_message_bytes, size)

    async def _receive(self, websocket: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for frame in websocket:
                self._on_outbound(frame)
        if not self._closed_by_us and not self._dropping:
            self._stop.set()

    def _on_outbound(self, frame: str | bytes) -> None:
        report = self.report
        now = self.media_ms()
        if isinstance(frame, bytes):
            report.violations.append(f"{now:.0f} ms: binary frame of {len(frame)} bytes (ACS expects text)")
            return
        try:
            message = parse_outbound(frame)
        except OutboundFormatError as exc:
            report.violations.append(f"{now:.0f} ms: {exc}")
            return
        if isinstance(message, UnknownOutbound):
            report.unknown_kinds[message.kind] = report.unknown_kinds.get(message.kind, 0) + 1
            report.violations.append(f"{now:.0f} ms: unknown kind {message.kind!r} (ignored)")
        elif isinstance(message, StopAudio):
            report.stop_audio += 1
            self.playout.stop(now)
        elif isinstance(message, OutboundAudioData):
            if not self.options.bidirectional:
                report.violations.append(f"{now:.0f} ms: AudioData sent but enableBidirectional is false")
                return
            report.outbound_audio_messages += 1
            report.outbound_audio_bytes += len(message.data)
            self._last_outbound_ms = now
            self.playout.enqueue(message.data, now)

    def _finish(self, websocket: ClientConnection, wall_s: float) -> None:
        report = self.report
        end_ms = self.media_ms()
        self.playout.advance(end_ms)
        report.media_ms = round(end_ms, 1)
        report.wall_s = round(wall_s, 3)
        report.playback = self.playout.stats()
        report.barge_ins = self.playout.barge_ins(sorted(self.audio.speech_onsets_ms() + self._extra_onsets))
        report.close_code = websocket.close_code
        report.close_reason = websocket.close_reason or ""
        report.closed_by = "simulator" if self._closed_by_us else "server"

    def write_recording(self, path: str | Path) -> None:
        self.playout.write_recording(path)
