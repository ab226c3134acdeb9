"""PCM16 mono audio: validated conversion from bytes and base64, and re-framing into fixed sizes.

Everything in koe moves audio as signed 16-bit little-endian mono. `pcm_from_bytes()` and `pcm_from_base64()` are
the entry points for wire data: they reject odd lengths and bad base64 with `AudioFormatError`, which every door
turns into an error in its own protocol.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Pcm = npt.NDArray[np.int16]
"""Mono PCM16 samples."""

SAMPLE_WIDTH = 2
SUPPORTED_RATES = (8000, 16000, 22050, 24000, 48000)
ENGINE_RATE = 16000
"""The sample rate inside the voice engine (VAD, STT and the echo canceller all run at 16 kHz)."""


class AudioFormatError(ValueError):
    """Audio bytes that cannot be PCM16 mono at a supported rate. The message says what is wrong."""


def check_rate(rate: int) -> int:
    """Return `rate` when koe supports it, else raise `AudioFormatError` naming the supported ones."""
    if rate not in SUPPORTED_RATES:
        supported = ", ".join(str(r) for r in SUPPORTED_RATES)
        raise AudioFormatError(f"unsupported sample rate {rate} Hz; supported rates are {supported} Hz")
    return rate


def pcm_from_bytes(data: bytes | bytearray | memoryview) -> Pcm:
    """Samples from PCM16LE bytes. The result shares memory with `data` and is read-only."""
    if len(data) % SAMPLE_WIDTH:
        raise AudioFormatError(f"PCM16 audio must have an even number of bytes, got {len(data)}")
    return np.frombuffer(data, dtype="<i2")


def pcm_from_base64(text: str | bytes) -> Pcm:
    """Samples from base64-encoded PCM16LE, as carried by ACS `AudioData` and Realtime `audio` fields."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise AudioFormatError(f"audio is not valid base64: {exc}") from exc
    return pcm_from_bytes(raw)


def pcm_to_bytes(pcm: Pcm) -> bytes:
    return np.asarray(pcm, dtype="<i2").tobytes()


def pcm_to_base64(pcm: Pcm | bytes) -> str:
    raw = pcm if isinstance(pcm, bytes) else pcm_to_bytes(pcm)
    return base64.b64encode(raw).decode("ascii")


def float_to_pcm(samples: npt.NDArray[np.floating]) -> Pcm:
    """Float samples in [-1, 1] to PCM16, clipping anything outside."""
    scaled = np.clip(np.asarray(samples, dtype=np.float32) * 32768.0, -32768.0, 32767.0)
    out: Pcm = np.rint(scaled).astype(np.int16)
    return out


def pcm_to_float(pcm: Pcm) -> npt.NDArray[np.float32]:
    return np.asarray(pcm, dtype=np.float32) * np.float32(1.0 / 32768.0)


def samples_for_ms(rate: int, ms: float) -> int:
    return round(rate * ms / 1000)


def duration_ms(samples: int, rate: int) -> float:
    return samples * 1000.0 / rate


def rms_dbfs(pcm: Pcm) -> float:
    """Level of `pcm` in dB relative to full scale; silence gives -inf."""
    if pcm.size == 0:
        return float("-inf")
    power = float(np.mean(np.square(pcm, dtype=np.float64)))
    return 10.0 * np.log10(power / (32768.0**2)) if power > 0 else float("-inf")


def silence(rate: int, ms: float) -> Pcm:
    return np.zeros(samples_for_ms(rate, ms), dtype=np.int16)


@dataclass
class Reframer:
    """Cuts a stream of arbitrary-length chunks into frames of exactly `frame_samples` samples.

    Processing stages that need a fixed frame size (VAD windows of 512, RNNoise's 480 at 48 kHz, the echo
    canceller's 10 ms) sit behind one of these, so callers can feed whatever the wire delivered.
    """

    frame_samples: int

    def __post_init__(self) -> None:
        if self.frame_samples <= 0:
            raise ValueError("frame_samples must be positive")
        self._pending: Pcm = np.zeros(0, dtype=np.int16)

    @property
    def pending_samples(self) -> int:
        return int(self._pending.size)

    def push(self, pcm: Pcm) -> list[Pcm]:
        """Add samples; return every complete frame now available, oldest first."""
        if self._pending.size:
            pcm = np.concatenate((self._pending, pcm))
        whole = pcm.size - pcm.size % self.frame_samples
        self._pending = pcm[whole:].copy()
        if not whole:
            return []
        return list(pcm[:whole].reshape(-1, self.frame_samples))

    def flush(self, pad: bool = True) -> list[Pcm]:
        """Return what is left, zero-padded to a whole frame when `pad`, and start empty."""
        rest, self._pending = self._pending, np.zeros(0, dtype=np.int16)
        if not rest.size:
            return []
        if pad:
            rest = np.concatenate((rest, np.zeros(self.frame_samples - rest.size, dtype=np.int16)))
        return [rest]

    def reset(self) -> None:
        self._pending = np.zeros(0, dtype=np.int16)
