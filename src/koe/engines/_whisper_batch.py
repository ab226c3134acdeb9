"""Transcriptions of several streams decoded together (`stt.batch_size`): call `Batcher.transcribe()`.

CTranslate2 encodes and decodes a batch of segments in one call for less than the sum of their calls (measured on
2 cores, tiny.en int8, 16 fixture utterances or prefixes of them waiting at once: 0.57x to 0.67x the CPU time). No
request waits for a batch to fill: each one joins the pending list and submits a job to the STT pool as before, and
whichever job starts first takes every pending segment that can share its batch (the same model, no prompt, a length
within `MAX_LENGTH_RATIO` of the oldest one's), up to `batch_size`, decodes them together and hands each its
transcript. The jobs whose segments were taken find nothing left and end at once. So with one stream nothing
changes, and under load a batch starts when the pool's fair queue (koe.engines.pool) gives its first job a turn.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from koe.engines._whisper_decode import Decoded, WhisperDecoder
from koe.engines.pool import WorkerPool

MAX_LENGTH_RATIO = 1.25
"""A batch takes segments up to this much longer or shorter than its oldest one: each is padded to the longest."""


@dataclass(eq=False)
class Pending:
    """One segment waiting for a batch."""

    audio: npt.NDArray[np.float32]
    code: str | None
    group: str
    """Segments of one group share a model (`primary` or `multilingual`)."""
    result: Future[tuple[Decoded, float]] = field(default_factory=Future)
    """The decoded segment and the wall time of its batch."""


class Batcher:
    def __init__(
        self,
        pool: WorkerPool,
        decoder_for: Callable[[str], WhisperDecoder],
        batch_size: int,
        allowed: frozenset[str] | None = None,
    ) -> None:
        self._pool = pool
        self._decoder_for = decoder_for
        self.batch_size = batch_size
        self._allowed = allowed
        self._pending: list[Pending] = []
        self._lock = threading.Lock()
        self.batches: dict[int, int] = {}
        """How many batches of each size were decoded (for tests and benchmarks)."""

    async def transcribe(self, audio: npt.NDArray[np.float32], code: str | None, group: str) -> tuple[Decoded, float]:
        """The segment's transcript, decoded in whichever batch takes it first; EngineBusy as the pool's."""
        pending = Pending(audio, code, group)
        with self._lock:
            self._pending.append(pending)
        try:
            await self._pool.run(self._decode_pending)
            return await asyncio.wrap_future(pending.result)  # a batch running on another worker may have it
        finally:
            with self._lock:  # refused, cancelled or failed before any batch took it
                if pending in self._pending:
                    self._pending.remove(pending)

    def _take(self) -> list[Pending]:
        with self._lock:
            if not self._pending:
                return []
            first = self._pending[0]
            low, high = first.audio.size / MAX_LENGTH_RATIO, first.audio.size * MAX_LENGTH_RATIO
            fits = [p for p in self._pending if p.group == first.group and low <= p.audio.size <= high]
            taken = fits[: self.batch_size]
            self._pending = [p for p in self._pending if p not in taken]
            return taken

    def _decode_pending(self) -> None:
        """A pool job: decode every segment that can share a batch with the oldest pending one."""
        taken = self._take()
        if not taken:
            return  # an earlier batch took this job's segment
        started = time.perf_counter()
        try:
            decoder = self._decoder_for(taken[0].group)
            decoded = decoder.decode_many([p.audio for p in taken], [p.code for p in taken], allowed=self._allowed)
        except BaseException as exc:  # each caller gets the failure as its own call would have raised it
            for pending in taken:
                pending.result.set_exception(exc)
            return
        elapsed = time.perf_counter() - started
        with self._lock:
            self.batches[len(taken)] = self.batches.get(len(taken), 0) + 1
        for pending, result in zip(taken, decoded, strict=True):
            pending.result.set_result((result, elapsed))
