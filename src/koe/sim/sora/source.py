"""A simulated client's microphone: an audio file turned into the 20 ms Opus packets Sora would forward.

`opus_packets(path)` returns the packets. An Ogg Opus file's packets are used as they are (Sora forwards the
client's packets without re-encoding); any other file PyAV reads (WAV, FLAC, MP3…) is decoded, resampled to
48 kHz mono and encoded with libopus (32 kbit/s, voip, 20 ms), as a browser's WebRTC stack would send it.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from koe.audio.files import read_audio
from koe.audio.opus import OPUS_RATE, OpusEncoder
from koe.audio.pcm import AudioFormatError

TRAILING_SILENCE_MS = 600
"""Silence appended after an encoded file, as a speaker pausing at the end; it lets VAD close the last turn."""


def opus_packets(path: str | Path, trailing_silence_ms: int = TRAILING_SILENCE_MS) -> list[bytes]:
    path = Path(path)
    packets = _ogg_packets(path) if path.suffix.lower() in (".ogg", ".opus", ".oga") else None
    if packets is None:
        pcm = read_audio(path, OPUS_RATE)
        encoder = OpusEncoder(OPUS_RATE)
        packets = encoder.encode(pcm)
        packets += encoder.flush()
    silent = OpusEncoder(OPUS_RATE)
    tail = silent.encode(np.zeros(OPUS_RATE * trailing_silence_ms // 1000, dtype=np.int16))
    return packets + tail


def _ogg_packets(path: Path) -> list[bytes] | None:
    """The Opus packets of an Ogg file, or None when it holds another codec (then it is decoded and re-encoded)."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio or container.streams.audio[0].codec_context.name != "opus":
                return None
            stream = container.streams.audio[0]
            return [bytes(packet) for packet in container.demux(stream) if packet.size]
    except av.error.FFmpegError as exc:
        raise AudioFormatError(f"cannot read {path}: {exc}") from exc
