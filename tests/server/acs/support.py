"""A real koe server for the ACS tests: `async with koe_server(settings, engines) as base_url:` serves
`create_app()` under Hypercorn on a free 127.0.0.1 port, in the test's event loop, and stops it afterwards;
`tls=TlsFiles` serves it over TLS (`https://`), as `koe serve --tls` does; `koe_with_listener()` adds the picows
media listener on its own port. `RecordingTTS` and `assert_sent_speech()` check that what a call was sent is the
speech TTS made.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from starlette.applications import Starlette

from koe.audio.resample import resample
from koe.config import Settings, load_settings
from koe.engines.base import SpeechChunk
from koe.engines.registry import Engines
from koe.net.inprocess import free_port, serving
from koe.net.tls import TlsFiles
from koe.server.acs.listener import AcsMediaListener
from koe.server.app import create_app
from koe.server.run import start_acs_media
from koe.sim.acs.media import MediaStream


def acs_settings(**acs: Any) -> Settings:
    return load_settings(overrides={"acs": acs})


@contextlib.asynccontextmanager
async def serve_app(app: Any, port: int | None = None, tls: TlsFiles | None = None) -> AsyncIterator[str]:
    """`app` on 127.0.0.1 (over TLS with `tls`'s certificate); yields its base URL."""
    certfile, keyfile = (tls.cert, tls.key) if tls is not None else (None, None)
    async with serving(app, port=port or 0, certfile=certfile, keyfile=keyfile) as bound:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{bound}"


@contextlib.asynccontextmanager
async def koe_server(
    settings: Settings, engines: Engines | None = None, tls: TlsFiles | None = None
) -> AsyncIterator[tuple[str, Starlette]]:
    app = create_app(settings, engines or Engines())
    async with serve_app(app, tls=tls) as base:
        yield base, app


@dataclass
class Koe:
    main: str
    """ws:// base URL of the main port."""
    media: str
    """ws:// base URL of the ACS media listener."""
    app: Starlette
    listener: AcsMediaListener


@contextlib.asynccontextmanager
async def koe_with_listener(settings: Settings, engines: Engines | None = None) -> AsyncIterator[Koe]:
    """koe's main port, plus the media listener started as `koe serve` starts it (on `acs.media_port`)."""
    settings.acs.media_port = free_port()
    said: list[str] = []
    async with koe_server(settings, engines) as (base, app):
        listener = await start_acs_media(settings, app.state.acs, said.append)
        assert listener is not None
        assert said == [f"ACS media listener on ws://127.0.0.1:{settings.acs.media_port}/acs/media (picows)"]
        try:
            yield Koe(base.replace("http", "ws"), f"ws://127.0.0.1:{listener.port}", app, listener)
        finally:
            await listener.close()


def record_outbound(stream: MediaStream) -> bytearray:
    """Every outbound AudioData payload `stream` receives, back to back (its playout timeline has gaps wherever the
    simulator, running faster than real time, played faster than koe sent)."""
    received = bytearray()
    enqueue = stream.playout.enqueue

    def keep(pcm: bytes, now_ms: float) -> None:
        received.extend(pcm)
        enqueue(pcm, now_ms)

    stream.playout.enqueue = keep  # type: ignore[method-assign]
    return received


@dataclass
class RecordingTTS:
    """A TTS engine that keeps every chunk it makes, so that a test can tell whether the audio a call was sent is
    that speech. Piper draws its noise afresh on each call, so the same text never makes the same samples twice: the
    comparison has to be with the very chunks the door was given."""

    inner: Any
    chunks: list[SpeechChunk] = field(default_factory=list)
    voices: list[str | None] = field(default_factory=list)
    """The voice each `synthesize()` call asked for."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def synthesize(self, text: str, voice: str | None = None) -> AsyncIterator[SpeechChunk]:
        self.voices.append(voice)
        async for chunk in self.inner.synthesize(text, voice):
            self.chunks.append(chunk)
            yield chunk


LAG = 96
"""How far (in samples) a chunk may sit from where the previous one ended: resampling twice (the voice's rate to
the Realtime rate, then to the call's) shifts a boundary by a few samples."""


def _similarity(signal: np.ndarray, position: int, made: np.ndarray) -> tuple[float, int]:
    """The best normalized correlation of `made` with `signal` from within `LAG` samples of `position`, and where
    that start is."""
    best, at = -1.0, position
    for start in range(max(0, position - LAG), position + LAG + 1):
        n = min(len(signal) - start, len(made))
        if n < 160:
            break
        a, b = signal[start : start + n], made[:n]
        norm = float(np.sqrt(np.dot(a, a) * np.dot(b, b)))
        score = float(np.dot(a, b)) / norm if norm else 0.0
        if score > best:
            best, at = score, start
    return best, at


def assert_sent_speech(sent: bytes, made: list[SpeechChunk], rate: int, *, tolerance_ms: int = 100) -> list[str]:
    """`sent` (PCM16 at `rate`, every outbound AudioData payload back to back) is TTS's speech: chunk after chunk of
    `made`, each whole, but the last, which the hang-up may have cut. A chunk TTS made for a reply that was then
    dropped (a speculative one) may be missing. Returns the text of the chunks that were sent."""
    assert sent, "the call was sent no audio"
    signal = np.frombuffer(sent, dtype="<i2").astype(np.float64)
    position, left, said = 0, list(made), []
    while len(signal) - position > rate * tolerance_ms // 1000:
        for index, chunk in enumerate(left):
            reference = resample(chunk.pcm, chunk.rate, rate).astype(np.float64)
            score, start = _similarity(signal, position, reference)
            if score >= 0.9:
                position = start + len(reference)
                said.append(chunk.text)
                left = left[index + 1 :]
                break
        else:
            seconds = position / rate
            raise AssertionError(
                f"the audio sent from {seconds:.2f} s of {len(signal) / rate:.2f} s is none of the {len(left)} "
                f"chunks TTS made after it ({[c.text for c in left]}); sent so far: {said}"
            )
    assert said, "none of the audio sent is speech TTS made"
    return said
