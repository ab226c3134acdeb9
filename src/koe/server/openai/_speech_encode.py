"""Streaming encoders for `/v1/audio/speech`: 24 kHz PCM16 in, clause by clause; bytes of the chosen format out.

Call `speech_encoder(fmt)` for one response, `encode(pcm)` per clause and `finish()` once; every call returns the
bytes that are ready, so the response can send them at once. The formats are OpenAI's: `pcm` (raw 24 kHz s16le),
`wav` (a WAV header whose sizes say "until the stream ends", as streamed WAV must), `opus` (Ogg Opus, koe's own
writer), and `mp3`, `aac` (ADTS) and `flac` through PyAV's encoders when this build of FFmpeg has them. `Tempo`
changes speed without changing pitch (FFmpeg's `atempo`), for OpenAI's `speed`.
"""

from __future__ import annotations

import contextlib
import struct
from fractions import Fraction
from typing import Protocol

import av
import av.error
import av.filter
import numpy as np

from koe.audio.ogg import OggOpusWriter
from koe.audio.opus import OpusEncoder
from koe.audio.pcm import Pcm

SPEECH_RATE = 24000
"""OpenAI's speech output rate, which `pcm` promises and every other format here uses too."""
OPUS_BITRATE = 32000
COMPRESSED_BITRATE = 64000
MIN_TEMPO_STEP = 0.5
MAX_TEMPO_STEP = 2.0
"""The range one `atempo` filter is guaranteed to take; other speeds chain several."""
_STREAMING_SIZE = 0xFFFFFFFF

CONTENT_TYPES = {
    "pcm": "audio/pcm",
    "wav": "audio/wav",
    "opus": "audio/ogg",
    "mp3": "audio/mpeg",
    "aac": "audio/aac",
    "flac": "audio/flac",
}
# format → (PyAV container, codec)
_CONTAINERS = {"mp3": ("mp3", "libmp3lame"), "aac": ("adts", "aac"), "flac": ("flac", "flac")}


class SpeechEncoder(Protocol):
    def encode(self, pcm: Pcm) -> bytes: ...

    def finish(self) -> bytes: ...


def available_formats() -> list[str]:
    """The formats this build can produce: always pcm, wav and opus; mp3, aac and flac if FFmpeg has them."""
    found = ["pcm", "wav", "opus"]
    for name, (container, codec) in _CONTAINERS.items():
        try:
            av.codec.Codec(codec, "w")
            av.format.ContainerFormat(container, "w")
        except (ValueError, av.error.FFmpegError):
            continue
        found.append(name)
    return found


def speech_encoder(fmt: str) -> SpeechEncoder:
    if fmt == "pcm":
        return _Raw()
    if fmt == "wav":
        return _Wav()
    if fmt == "opus":
        return _OggOpus()
    container, codec = _CONTAINERS[fmt]
    return _Muxed(container, codec)


class _Raw:
    def encode(self, pcm: Pcm) -> bytes:
        return np.asarray(pcm, dtype="<i2").tobytes()

    def finish(self) -> bytes:
        return b""


class _Wav(_Raw):
    def __init__(self) -> None:
        self._header: bytes | None = _wav_header(SPEECH_RATE)

    def encode(self, pcm: Pcm) -> bytes:
        header, self._header = self._header or b"", None
        return header + super().encode(pcm)

    def finish(self) -> bytes:
        header, self._header = self._header or b"", None
        return header


def _wav_header(rate: int) -> bytes:
    channels, width = 1, 2
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * channels * width, channels * width, 8 * width)
    return (
        b"RIFF"
        + struct.pack("<I", _STREAMING_SIZE)
        + b"WAVEfmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"data"
        + struct.pack("<I", _STREAMING_SIZE)
    )


class _OggOpus:
    def __init__(self) -> None:
        self._opus = OpusEncoder(SPEECH_RATE, bitrate=OPUS_BITRATE, application="audio")
        self._ogg = OggOpusWriter(pre_skip=self._opus.lookahead_samples, input_rate=SPEECH_RATE)
        self._header: bytes | None = self._ogg.header()
        self._samples = 0

    def _pages(self, packets: list[bytes]) -> bytes:
        header, self._header = self._header or b"", None
        return header + b"".join(self._ogg.write(packet) for packet in packets)

    def encode(self, pcm: Pcm) -> bytes:
        self._samples += pcm.size
        return self._pages(self._opus.encode(pcm))

    def finish(self) -> bytes:
        body = self._pages(self._opus.flush())
        # The last page's granule trims the zero padding of the final frame (RFC 7845 §4.5).
        end = self._ogg.head.pre_skip + self._samples * 48000 // SPEECH_RATE
        return body + self._ogg.close(final_granule=min(end, self._ogg.granule))


class _Sink:
    """A write-only file for PyAV: no `seek`, so muxers write straight through and never go back."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def write(self, data: bytes) -> int:
        self.buffer += data
        return len(data)

    def take(self) -> bytes:
        out = bytes(self.buffer)
        self.buffer.clear()
        return out


class _Muxed:
    def __init__(self, container: str, codec: str) -> None:
        self._sink = _Sink()
        self._container = av.open(self._sink, "w", format=container)
        stream = self._container.add_stream(codec, rate=SPEECH_RATE)
        assert isinstance(stream, av.AudioStream)
        stream.layout = "mono"
        if codec != "flac":
            stream.bit_rate = COMPRESSED_BITRATE
        self._stream = stream
        self._pts = 0

    def encode(self, pcm: Pcm) -> bytes:
        if pcm.size:
            frame = _frame(pcm, self._pts)
            self._pts += pcm.size
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        return self._sink.take()

    def finish(self) -> bytes:
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
        return self._sink.take()


def _frame(pcm: Pcm, pts: int) -> av.AudioFrame:
    frame = av.AudioFrame.from_ndarray(
        np.ascontiguousarray(pcm, dtype=np.int16).reshape(1, -1), format="s16", layout="mono"
    )
    frame.sample_rate = SPEECH_RATE
    frame.pts = pts
    return frame


class Tempo:
    """Speed up or slow down 24 kHz PCM16 by `speed` (0.25-4.0), keeping its pitch; streaming, state carried."""

    def __init__(self, speed: float) -> None:
        graph = av.filter.Graph()
        node = graph.add_abuffer(
            format="s16", sample_rate=SPEECH_RATE, layout="mono", time_base=Fraction(1, SPEECH_RATE)
        )
        for step in _tempo_steps(speed):
            stage = graph.add("atempo", f"{step:.6f}")
            node.link_to(stage)
            node = stage
        sink = graph.add("abuffersink")
        node.link_to(sink)
        graph.configure()
        self._graph = graph
        self._pts = 0

    def process(self, pcm: Pcm) -> Pcm:
        frame = _frame(pcm, self._pts)
        self._pts += pcm.size
        self._graph.push(frame)
        return self._pull()

    def flush(self) -> Pcm:
        self._graph.push(None)
        return self._pull()

    def _pull(self) -> Pcm:
        chunks: list[Pcm] = []
        with contextlib.suppress(av.error.BlockingIOError, av.error.EOFError):
            while True:
                frame = self._graph.pull()
                assert isinstance(frame, av.AudioFrame)
                chunks.append(frame.to_ndarray().reshape(-1).astype(np.int16, copy=False))
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)


def _tempo_steps(speed: float) -> list[float]:
    steps: list[float] = []
    while speed > MAX_TEMPO_STEP:
        steps.append(MAX_TEMPO_STEP)
        speed /= MAX_TEMPO_STEP
    while speed < MIN_TEMPO_STEP:
        steps.append(MIN_TEMPO_STEP)
        speed /= MIN_TEMPO_STEP
    return [*steps, speed]
