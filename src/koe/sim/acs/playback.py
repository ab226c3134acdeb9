"""ACS's side of outbound audio: a real-time playout queue that `StopAudio` flushes, a recording of both directions
of the call, and the barge-in timing report.

Sans-I/O: every method takes the call's media clock in ms (0 when streaming started; wall time × speed), so the
same code runs paced or faster than real time. Call `enqueue()` for each outbound AudioData, `stop()` for each
StopAudio, `advance(now_ms)` as time passes, and `add_inbound()` for what the callers sent.
"""

from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from koe.audio.pcm import Pcm

UNDERRUN_GAP_MS = 500
"""Audio arriving this soon after the queue ran dry means the sender fell behind real time (an underrun)."""


@dataclass(frozen=True, slots=True)
class Flush:
    """One StopAudio: when it arrived, and how much queued audio it threw away."""

    at_ms: float
    dropped_ms: float
    was_playing: bool


@dataclass(frozen=True, slots=True)
class BargeIn:
    """Interrupting speech and the StopAudio that answered it."""

    onset_ms: float
    participant_raw_id: str
    stop_ms: float
    latency_ms: float
    """From speech onset to StopAudio, on the media clock."""
    dropped_ms: float
    """Queued reply audio that the flush discarded."""


class Playout:
    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._queue: list[Pcm] = []
        self._queued = 0
        self._clock_ms = 0.0
        self._played = np.zeros(rate * 10, dtype=np.int16)
        self._played_end = 0
        self._inbound = np.zeros(rate * 10, dtype=np.int16)
        self._inbound_end = 0
        self._empty_since_ms: float | None = None
        self.received_samples = 0
        self.played_samples = 0
        self.flushed_samples = 0
        self.underruns = 0
        self.flushes: list[Flush] = []
        self.playing_spans: list[tuple[float, float]] = []
        self._span_start: float | None = None

    @property
    def queued_ms(self) -> float:
        return self._queued * 1000.0 / self.rate

    @property
    def clock_ms(self) -> float:
        return self._clock_ms

    def enqueue(self, pcm: bytes, now_ms: float) -> None:
        self.advance(now_ms)
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.int16)
        if not samples.size:
            return
        if self._queued == 0 and self._empty_since_ms is not None and now_ms - self._empty_since_ms < UNDERRUN_GAP_MS:
            self.underruns += 1
        self._queue.append(samples)
        self._queued += samples.size
        self.received_samples += samples.size
        if self._span_start is None:
            self._span_start = now_ms

    def playing_for_ms(self) -> float:
        """How long the current stretch of outbound audio has been playing (0 when nothing plays)."""
        if self._span_start is None:
            return 0.0
        return max(0.0, self._clock_ms - self._span_start)

    def stop(self, now_ms: float) -> Flush:
        """StopAudio: drop everything queued. Not sticky: the next `enqueue()` plays normally."""
        self.advance(now_ms)
        flush = Flush(now_ms, self.queued_ms, self._queued > 0)
        self.flushed_samples += self._queued
        self._queue.clear()
        self._queued = 0
        self._end_span(now_ms)
        self._empty_since_ms = None
        self.flushes.append(flush)
        return flush

    def advance(self, now_ms: float) -> None:
        """Play out queued audio up to `now_ms`."""
        if now_ms <= self._clock_ms:
            return
        start = round(self._clock_ms * self.rate / 1000)
        end = round(now_ms * self.rate / 1000)
        self._clock_ms = now_ms
        want = end - start
        cursor = start
        while want > 0 and self._queue:
            head = self._queue[0]
            take = min(want, head.size)
            self._write_played(cursor, head[:take])
            cursor += take
            want -= take
            self._queued -= take
            self.played_samples += take
            if take == head.size:
                self._queue.pop(0)
            else:
                self._queue[0] = head[take:]
        if self._queued == 0 and self._span_start is not None:
            ended = cursor * 1000.0 / self.rate
            self._end_span(ended)
            self._empty_since_ms = ended

    def add_inbound(self, pcm: Pcm, at_ms: float) -> None:
        """Record what the callers sent (mixed) at `at_ms`, for the two-track recording."""
        start = round(at_ms * self.rate / 1000)
        self._inbound = _ensure(self._inbound, start + pcm.size)
        region = self._inbound[start : start + pcm.size].astype(np.int32) + pcm
        self._inbound[start : start + pcm.size] = np.clip(region, -32768, 32767)
        self._inbound_end = max(self._inbound_end, start + pcm.size)

    def played(self) -> Pcm:
        """Outbound audio as the call heard it, on the media timeline (silence where nothing played)."""
        return self._played[: self._played_end].copy()

    def write_recording(self, path: str | Path) -> None:
        """A stereo WAV at the stream rate: left what the callers said, right what the server played to them."""
        length = max(self._played_end, self._inbound_end)
        stereo = np.zeros((length, 2), dtype="<i2")
        stereo[: self._inbound_end, 0] = self._inbound[: self._inbound_end]
        stereo[: self._played_end, 1] = self._played[: self._played_end]
        with wave.open(str(path), "wb") as out:
            out.setnchannels(2)
            out.setsampwidth(2)
            out.setframerate(self.rate)
            out.writeframes(stereo.tobytes())

    def barge_ins(self, onsets: list[tuple[int, str]]) -> list[BargeIn]:
        """Pair each flush of audio that was playing with the latest speech onset before it, while it played."""
        found: list[BargeIn] = []
        for flush in self.flushes:
            if not flush.was_playing:
                continue
            before = [(at, who) for at, who in onsets if at <= flush.at_ms and self._playing_near(at, flush.at_ms)]
            if before:
                at, who = before[-1]
                found.append(BargeIn(at, who, flush.at_ms, flush.at_ms - at, flush.dropped_ms))
        return found

    def stats(self) -> dict[str, Any]:
        ms = 1000.0 / self.rate
        return {
            "received_ms": round(self.received_samples * ms, 1),
            "played_ms": round(self.played_samples * ms, 1),
            "flushed_ms": round(self.flushed_samples * ms, 1),
            "queued_ms": round(self.queued_ms, 1),
            "flushes": len(self.flushes),
            "underruns": self.underruns,
        }

    def _playing_near(self, onset_ms: float, stop_ms: float) -> bool:
        # The reply must have been audible at some point between the onset and the stop: speech that started
        # before the reply and simply went on is still an interruption.
        return any(start <= stop_ms and end >= onset_ms for start, end in [*self.playing_spans, self._open_span()])

    def _open_span(self) -> tuple[float, float]:
        return (self._span_start, self._clock_ms) if self._span_start is not None else (-1.0, -1.0)

    def _end_span(self, at_ms: float) -> None:
        if self._span_start is not None:
            self.playing_spans.append((self._span_start, at_ms))
            self._span_start = None

    def _write_played(self, at: int, pcm: Pcm) -> None:
        self._played = _ensure(self._played, at + pcm.size)
        self._played[at : at + pcm.size] = pcm
        self._played_end = max(self._played_end, at + pcm.size)


def _ensure(buffer: Pcm, size: int) -> Pcm:
    if size <= buffer.size:
        return buffer
    grown = np.zeros(max(size, buffer.size * 2), dtype=np.int16)
    grown[: buffer.size] = buffer
    return grown
