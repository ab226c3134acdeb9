"""Silero VAD v6 on onnxruntime, streaming: one 512-sample window (32 ms at 16 kHz) at a time, state carried.

`SileroVAD.load()` opens one shared ONNX session; `SileroVAD.stream()` gives each audio stream its own LSTM state
and 64-sample context. `SileroStream.push()` accepts chunks of any size and returns one probability per whole
window. The model file is the one faster-whisper ships, so no extra download or package is needed.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt

from koe.audio.pcm import ENGINE_RATE, AudioFormatError, Pcm, Reframer
from koe.engines._onnx import session_options
from koe.engines.base import EngineUnavailable

WINDOW_SAMPLES = 512
CONTEXT_SAMPLES = 64
STATE_SHAPE = (1, 1, 128)


def default_model_path() -> Path:
    spec = importlib.util.find_spec("faster_whisper")
    if spec is None or not spec.submodule_search_locations:
        raise EngineUnavailable("Silero VAD needs the faster-whisper package, which ships its model")
    return Path(next(iter(spec.submodule_search_locations))) / "assets" / "silero_vad_v6.onnx"


class SileroVAD:
    name = "silero-vad-v6"

    def __init__(self, session: object, load_s: float) -> None:
        self._session = session
        self.load_s = load_s

    @classmethod
    def load(cls, model_path: Path | None = None, threads: int = 1) -> SileroVAD:
        import onnxruntime

        path = model_path or default_model_path()
        if not path.is_file():
            raise EngineUnavailable(f"Silero VAD model not found at {path}")
        started = time.perf_counter()
        options = session_options(threads)
        # One window per call: the arena only adds memory, and graph-level threading only adds latency.
        options.enable_cpu_mem_arena = False
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        try:
            session = onnxruntime.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped exceptions
            raise EngineUnavailable(f"cannot load Silero VAD from {path}: {exc}") from exc
        return cls(session, time.perf_counter() - started)

    def stream(self) -> SileroStream:
        return SileroStream(self._session)


class SileroStream:
    window_samples = WINDOW_SAMPLES
    rate = ENGINE_RATE

    def __init__(self, session: object) -> None:
        self._run = session.run  # type: ignore[attr-defined]  # onnxruntime.InferenceSession
        self._input = np.zeros((1, CONTEXT_SAMPLES + WINDOW_SAMPLES), dtype=np.float32)
        self._h: npt.NDArray[np.float32] = np.zeros(STATE_SHAPE, dtype=np.float32)
        self._c: npt.NDArray[np.float32] = np.zeros(STATE_SHAPE, dtype=np.float32)
        self._frames = Reframer(WINDOW_SAMPLES)

    def process(self, window: Pcm) -> float:
        if window.size != WINDOW_SAMPLES:
            raise AudioFormatError(f"a VAD window is {WINDOW_SAMPLES} samples, got {window.size}")
        buf = self._input
        # The model sees the last 64 samples of the previous window in front of the new one.
        buf[0, :CONTEXT_SAMPLES] = buf[0, WINDOW_SAMPLES:]
        np.multiply(window, np.float32(1.0 / 32768.0), out=buf[0, CONTEXT_SAMPLES:], casting="unsafe")
        prob, self._h, self._c = self._run(None, {"input": buf, "h": self._h, "c": self._c})
        return float(prob.reshape(-1)[0])

    def push(self, pcm: Pcm) -> list[float]:
        """Probabilities for every whole window in what has been pushed so far."""
        return [self.process(window) for window in self._frames.push(pcm)]

    def reset(self) -> None:
        self._input[:] = 0
        self._h = np.zeros(STATE_SHAPE, dtype=np.float32)
        self._c = np.zeros(STATE_SHAPE, dtype=np.float32)
        self._frames.reset()
