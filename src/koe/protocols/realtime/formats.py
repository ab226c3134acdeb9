"""Audio formats of the Realtime API: what the session's input and output formats mean, and converting to them.

An `AudioFormat` is a (codec, rate) pair. Beta and Azure name formats with strings (`pcm16`, `pcm16_16000hz`,
`g711_ulaw`, plus Azure's `input_audio_sampling_rate`), GA with objects (`{"type": "audio/pcm", "rate": 24000}`,
`{"type": "audio/pcmu"}`); the session codec maps both onto this one type.

For the door: `decode_audio()` turns an `input_audio_buffer.append` payload into PCM16 samples at `fmt.rate` (resample
from there to the engine rate), `encode_audio()` turns PCM16 at `fmt.rate` into wire bytes, and `split_audio()` cuts
wire bytes into pieces short enough for one `response.audio.delta` each (every frame must stay under 1 MiB, spec §11.6).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from koe.audio.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from koe.audio.pcm import Pcm, pcm_from_bytes, pcm_to_bytes
from koe.protocols.realtime.errors import INVALID_VALUE, RealtimeError

Codec = Literal["pcm16", "g711_ulaw", "g711_alaw"]

G711_RATE = 8000
"""G.711 is 8 kHz by definition."""
PCM16_RATES = (24000, 16000, 8000)
"""PCM16 rates the Realtime API names (Azure `input_audio_sampling_rate`, `pcm16_16000hz`, `pcm16_8000hz`)."""
DELTA_MAX_MS = 500
"""Longest audio in one outgoing delta: ~43 KB of base64 at 24 kHz PCM16, far below the 1 MiB frame limit of the
Voice Live quickstart, and short enough that a barge-in never has much audio already queued in one frame."""


@dataclass(frozen=True, slots=True)
class AudioFormat:
    codec: Codec
    rate: int
    """Samples per second."""

    @property
    def sample_bytes(self) -> int:
        return 2 if self.codec == "pcm16" else 1

    def bytes_for_ms(self, ms: float) -> int:
        """Whole samples' worth of bytes for `ms` milliseconds."""
        return int(self.rate * ms / 1000) * self.sample_bytes

    def duration_ms(self, nbytes: int) -> float:
        return nbytes / self.sample_bytes * 1000.0 / self.rate


PCM16_24K = AudioFormat("pcm16", 24000)
PCM16_16K = AudioFormat("pcm16", 16000)
PCM16_8K = AudioFormat("pcm16", 8000)
G711_ULAW = AudioFormat("g711_ulaw", G711_RATE)
G711_ALAW = AudioFormat("g711_alaw", G711_RATE)

# Beta/Azure `output_audio_format` names; the hyphenated ones are legacy spellings the VL SDK still reads (spec §3).
_OUTPUT_NAMES: dict[str, AudioFormat] = {
    "pcm16": PCM16_24K,
    "pcm16_16000hz": PCM16_16K,
    "pcm16_8000hz": PCM16_8K,
    "pcm16-16000hz": PCM16_16K,
    "pcm16-8000hz": PCM16_8K,
    "g711_ulaw": G711_ULAW,
    "g711_alaw": G711_ALAW,
}
AZURE_OUTPUT_NAMES = ("pcm16", "pcm16_16000hz", "pcm16_8000hz", "g711_ulaw", "g711_alaw")
OPENAI_FORMAT_NAMES = ("pcm16", "g711_ulaw", "g711_alaw")
GA_FORMAT_TYPES = ("audio/pcm", "audio/pcmu", "audio/pcma")
_GA_TYPES: dict[str, Codec] = {"audio/pcm": "pcm16", "audio/pcmu": "g711_ulaw", "audio/pcma": "g711_alaw"}


def output_format_from_name(name: str) -> AudioFormat | None:
    """The format a beta/Azure `output_audio_format` string names, or None for an unknown name."""
    return _OUTPUT_NAMES.get(name)


def output_format_name(fmt: AudioFormat) -> str:
    """The beta/Azure `output_audio_format` string for `fmt` (rates other than 24 kHz are Azure-only names)."""
    if fmt.codec != "pcm16":
        return fmt.codec
    return "pcm16" if fmt.rate == 24000 else f"pcm16_{fmt.rate}hz"


def input_format(codec: Codec, rate: int | None) -> AudioFormat:
    """The input format for a beta/Azure codec name plus Azure's optional `input_audio_sampling_rate`."""
    if codec == "pcm16":
        return AudioFormat("pcm16", rate or 24000)
    return AudioFormat(codec, G711_RATE)


def ga_format(fmt: AudioFormat) -> dict[str, object]:
    """The GA format object, e.g. `{"type": "audio/pcm", "rate": 24000}`."""
    if fmt.codec == "pcm16":
        return {"type": "audio/pcm", "rate": fmt.rate}
    return {"type": "audio/pcmu" if fmt.codec == "g711_ulaw" else "audio/pcma"}


def codec_from_ga_type(ga_type: str) -> Codec | None:
    return _GA_TYPES.get(ga_type)


def check_audio(data: bytes, fmt: AudioFormat, param: str = "audio") -> bytes:
    """`data` if it is whole samples of `fmt`, else `RealtimeError` (an odd PCM16 length means a torn sample)."""
    if len(data) % fmt.sample_bytes:
        raise RealtimeError(
            f"Invalid audio: {fmt.codec} audio must be a whole number of {fmt.sample_bytes}-byte samples, "
            f"got {len(data)} bytes.",
            code=INVALID_VALUE,
            param=param,
        )
    return data


def decode_audio(data: bytes, fmt: AudioFormat) -> Pcm:
    """PCM16 samples at `fmt.rate` from wire bytes in `fmt`."""
    if fmt.codec == "g711_ulaw":
        return ulaw_decode(data)
    if fmt.codec == "g711_alaw":
        return alaw_decode(data)
    return pcm_from_bytes(check_audio(data, fmt))


def encode_audio(pcm: Pcm, fmt: AudioFormat) -> bytes:
    """Wire bytes in `fmt` from PCM16 samples already at `fmt.rate`."""
    if fmt.codec == "g711_ulaw":
        return ulaw_encode(pcm)
    if fmt.codec == "g711_alaw":
        return alaw_encode(pcm)
    return pcm_to_bytes(np.asarray(pcm, dtype=np.int16))


def split_audio(data: bytes, fmt: AudioFormat, max_ms: float = DELTA_MAX_MS) -> list[bytes]:
    """`data` cut into pieces of at most `max_ms` each, on sample boundaries. Empty input gives no pieces."""
    step = max(fmt.bytes_for_ms(max_ms), fmt.sample_bytes)
    return [data[i : i + step] for i in range(0, len(data), step)]
