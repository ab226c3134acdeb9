"""Noise suppression with RNNoise, at any supported rate, in chunks of any length.

RNNoise works on 10 ms frames of 480 samples at 48 kHz. `NoiseSuppressor` resamples to 48 kHz, re-frames, denoises
and converts back, so a caller feeds it 20 ms frames at 16 kHz (or anything else) and gets the same amount of audio
back: exactly as many samples as went in, `delay_samples` behind the input (about 40 ms at 48 kHz, 80 ms at 16 kHz:
RNNoise's own 20 ms, plus what the two streaming resamplers and the re-framer hold back). The C library comes from the
pyrnnoise wheel; it is loaded with ctypes directly, because importing pyrnnoise's Python package drags in plotting
and file libraries.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import threading
from pathlib import Path

import numpy as np

from koe.audio.pcm import Pcm, Reframer, check_rate
from koe.audio.resample import Resampler

RNNOISE_RATE = 48000
RNNOISE_FRAME = 480
RNNOISE_DELAY_SAMPLES = 960
"""RNNoise's output lags its input by one frame plus its window's 10 ms lookahead (measured: 20 ms at 48 kHz)."""
_PRIME_CHUNK_MS = 10
_PRIME_MS = 300
_lib: ctypes.CDLL | None = None
_lib_lock = threading.Lock()


class DenoiseUnavailable(RuntimeError):
    """RNNoise's library could not be loaded; the message says what to install."""


def _library() -> ctypes.CDLL:
    global _lib
    with _lib_lock:
        if _lib is None:
            spec = importlib.util.find_spec("pyrnnoise")
            if spec is None or not spec.submodule_search_locations:
                raise DenoiseUnavailable("noise suppression needs the pyrnnoise package: pip install pyrnnoise")
            path = Path(next(iter(spec.submodule_search_locations))) / "librnnoise.so"
            try:
                lib = ctypes.CDLL(str(path))
            except OSError as exc:
                raise DenoiseUnavailable(f"cannot load {path}: {exc}") from exc
            lib.rnnoise_create.argtypes = [ctypes.c_void_p]
            lib.rnnoise_create.restype = ctypes.c_void_p
            lib.rnnoise_destroy.argtypes = [ctypes.c_void_p]
            lib.rnnoise_destroy.restype = None
            lib.rnnoise_process_frame.argtypes = [
                ctypes.c_void_p,
                ctypes.POINTER(ctypes.c_float),
                ctypes.POINTER(ctypes.c_float),
            ]
            lib.rnnoise_process_frame.restype = ctypes.c_float
            lib.rnnoise_get_frame_size.restype = ctypes.c_int
            if lib.rnnoise_get_frame_size() != RNNOISE_FRAME:
                raise DenoiseUnavailable("unexpected RNNoise frame size")
            _lib = lib
        return _lib


class NoiseSuppressor:
    """One RNNoise state for one stream of audio at `rate`."""

    def __init__(self, rate: int) -> None:
        self.rate = check_rate(rate)
        self._lib = _library()
        self._state: int | None = self._lib.rnnoise_create(None)
        self._up = Resampler(rate, RNNOISE_RATE)
        self._down = Resampler(RNNOISE_RATE, rate)
        self._frames = Reframer(RNNOISE_FRAME)
        # The output starts with this much silence, so that what the resamplers and the re-framer hold back never
        # leaves a caller short: the delay is then fixed from the first call on.
        self._lead = _pipeline_lag(rate) + -(-RNNOISE_FRAME * rate // RNNOISE_RATE)
        self._inserted = 0
        self._fifo: Pcm = np.zeros(self._lead, dtype=np.int16)
        self._buf = np.zeros(RNNOISE_FRAME, dtype=np.float32)
        self._ptr = self._buf.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        self.speech_probability = 0.0
        """RNNoise's own voice-activity estimate for the last frame it processed."""

    @property
    def delay_samples(self) -> int:
        """How far (at `rate`) the output lags the input."""
        return self._lead + self._inserted + RNNOISE_DELAY_SAMPLES * self.rate // RNNOISE_RATE

    def process(self, pcm: Pcm) -> Pcm:
        """Denoise the next chunk: the result has exactly `pcm.size` samples, `delay_samples` behind the input."""
        if self._state is None:
            raise RuntimeError("NoiseSuppressor is closed")
        out: list[Pcm] = []
        for frame in self._frames.push(self._up.process(pcm)):
            self._buf[:] = frame
            self.speech_probability = float(self._lib.rnnoise_process_frame(self._state, self._ptr, self._ptr))
            out.append(np.clip(np.rint(self._buf), -32768, 32767).astype(np.int16))
        if out:
            self._fifo = np.concatenate((self._fifo, self._down.process(np.concatenate(out))))
        if self._fifo.size < pcm.size:  # only if a caller's chunking held back more than the lead allows for
            self._inserted += pcm.size - self._fifo.size
            self._fifo = np.concatenate((np.zeros(pcm.size - self._fifo.size, dtype=np.int16), self._fifo))
        result, self._fifo = self._fifo[: pcm.size], self._fifo[pcm.size :]
        return result

    def close(self) -> None:
        if self._state is not None:
            self._lib.rnnoise_destroy(self._state)
            self._state = None

    def __del__(self) -> None:
        self.close()


@functools.cache
def _pipeline_lag(rate: int) -> int:
    """Most samples (at `rate`) the resample, re-frame, resample chain withholds, found by running it on silence."""
    if rate == RNNOISE_RATE:
        return 0
    up, down, frames = Resampler(rate, RNNOISE_RATE), Resampler(RNNOISE_RATE, rate), Reframer(RNNOISE_FRAME)
    chunk = np.zeros(rate * _PRIME_CHUNK_MS // 1000, dtype=np.int16)
    fed = produced = worst = 0
    for _ in range(_PRIME_MS // _PRIME_CHUNK_MS):
        fed += chunk.size
        for frame in frames.push(up.process(chunk)):
            produced += down.process(frame).size
        worst = max(worst, fed - produced)
    return worst
