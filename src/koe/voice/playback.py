"""The playback clock: what the listener has heard of the audio a session sent, and what is playing right now.

Transports give no acknowledgement of playback (ACS has no marks; Realtime clients only report it when they
truncate), so koe models it: audio plays in real time from the moment it is sent, without gaps, and an underrun
leaves a gap until the next chunk arrives. `interrupt()` answers the barge-in question (how many ms of this item
were heard, how many will now never be played), and `far_end()` gives the echo canceller what is coming out of the
listener's speaker at this moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from koe.audio.pcm import ENGINE_RATE, Pcm
from koe.audio.resample import SteadyResampler
from koe.tasks import within

OUTPUT_LEAD_MS = 400
"""How far reply audio may run ahead of the listener's playback: enough to ride out network jitter, short enough
that a barge-in leaves little already-sent audio behind. Every reply keeps to it from its first chunk on, a held
(speculative) one included."""
HOLD_FLOOR_MS = 60
"""A held reply (`hold()`) still goes on before the listener's unplayed audio runs below this: a hold never leaves
them a gap."""
MAX_HOLD_MS = 500
"""A hold that lasts this long is over, whatever holds it (a speaker whose audio stopped with an onset pending): longer
than any onset takes to confirm."""
FAR_END_HISTORY_S = 2.0
"""How far back the echo reference reaches; longer than any echo tail the canceller models."""


@dataclass
class _Chunk:
    start: float
    duration: float
    pcm16k: Pcm | None
    reference_start: float = 0.0
    """When `pcm16k`'s first sample played: the resampler's fixed delay before `start`."""


class PlaybackClock:
    def __init__(self, clock: Callable[[], float] = time.monotonic, keep_reference: bool = False) -> None:
        self._clock = clock
        self.keep_reference = keep_reference
        """Keep what was played, at 16 kHz, as the echo canceller's far end (`far_end()`)."""
        self._end = 0.0
        """Wall time at which everything sent so far will have been played."""
        self.item_id: str | None = None
        self.response_id: str | None = None
        self._item_chunks: list[_Chunk] = []
        self._history: deque[_Chunk] = deque()
        self._to_16k: SteadyResampler | None = None
        self._resume = asyncio.Event()
        self._resume.set()
        self._held_since = 0.0

    def now(self) -> float:
        return self._clock()

    def sent(self, response_id: str | None, item_id: str, pcm: Pcm, rate: int) -> None:
        """Record audio handed to the transport for `item_id`; it plays after everything sent before it."""
        now = self._clock()
        if item_id != self.item_id:
            self.item_id, self.response_id, self._item_chunks = item_id, response_id, []
        start = max(now, self._end)
        duration = pcm.size / rate
        self._end = start + duration
        reference: Pcm | None = None
        reference_start = start
        if self.keep_reference:
            # Exactly the chunk's duration at a fixed delay: the echo canceller needs the reference aligned to a
            # few samples, and a plain streaming resampler's short first output left a 12 ms gap in it.
            if self._to_16k is None or self._to_16k.src_rate != rate:
                self._to_16k = SteadyResampler(rate, ENGINE_RATE)
            reference = self._to_16k.process(pcm)
            reference_start = start - self._to_16k.delay_samples / ENGINE_RATE
        chunk = _Chunk(start, duration, reference, reference_start)
        self._item_chunks.append(chunk)
        self._history.append(chunk)
        while self._history and self._history[0].start + self._history[0].duration < now - FAR_END_HISTORY_S:
            self._history.popleft()

    def is_playing(self) -> bool:
        return self._end > self._clock()

    def pending_ms(self) -> int:
        return max(0, round((self._end - self._clock()) * 1000))

    def hold(self) -> None:
        """The caller may be starting to speak over the reply: send no more of it until `resume()`, unless the
        listener's unplayed audio would run below `HOLD_FLOOR_MS`. If it is the caller, the reply stops with the
        little that was sent before; if not, it goes on with no gap, as the lead covers the wait."""
        if self._resume.is_set():
            self._held_since = self._clock()
            self._resume.clear()

    def resume(self) -> None:
        self._resume.set()

    async def wait_room(self, chunk_ms: float, lead_ms: int = OUTPUT_LEAD_MS) -> None:
        """Return once `chunk_ms` more audio can be sent without the unplayed audio exceeding `lead_ms` (at once
        when nothing is waiting to be played, so a chunk longer than the lead still goes), and not while held."""
        while True:
            while self._held() and (slack_ms := self.pending_ms() - HOLD_FLOOR_MS) > 0:
                left_ms = MAX_HOLD_MS - (self._clock() - self._held_since) * 1000
                with contextlib.suppress(TimeoutError):
                    await within(self._resume.wait(), min(slack_ms, left_ms) / 1000)
            ahead_ms = (self._end - self._clock()) * 1000 + chunk_ms - lead_ms
            if ahead_ms <= 0 or not self.is_playing():
                return
            await asyncio.sleep(ahead_ms / 1000)
            if not self._held():
                return  # not held meanwhile: the room is there

    def _held(self) -> bool:
        return not self._resume.is_set() and (self._clock() - self._held_since) * 1000 < MAX_HOLD_MS

    def played_ms(self, item_id: str) -> int:
        if item_id != self.item_id:
            return 0
        now = self._clock()
        heard = sum(min(max(now - chunk.start, 0.0), chunk.duration) for chunk in self._item_chunks)
        return round(heard * 1000)

    def sent_ms(self, item_id: str) -> int:
        if item_id != self.item_id:
            return 0
        return round(sum(chunk.duration for chunk in self._item_chunks) * 1000)

    def interrupt(self) -> tuple[str | None, str | None, int, int]:
        """Stop playback now: (response_id, item_id, ms of the item heard, ms sent but never to be played)."""
        item_id = self.item_id
        played = self.played_ms(item_id) if item_id else 0
        dropped = self.pending_ms()
        now = self._clock()
        self._end = min(self._end, now)
        for chunk in self._history:  # the echo reference must not contain audio that was flushed
            if chunk.start + chunk.duration > now:
                chunk.duration = max(0.0, now - chunk.start)
        return self.response_id, item_id, played, dropped

    def far_end(self, samples: int, until: float | None = None) -> Pcm:
        """The 16 kHz audio playing during the `samples` samples of wall time that end at `until` (default: now),
        zeros where nothing played."""
        out = np.zeros(samples, dtype=np.int16)
        if not self.keep_reference or not self._history:
            return out
        now = self._clock() if until is None else until
        window_start = now - samples / ENGINE_RATE
        for chunk in self._history:
            if chunk.pcm16k is None:
                continue
            lo = max(chunk.reference_start, window_start)
            hi = min(chunk.reference_start + chunk.duration, now)
            if hi <= lo:
                continue
            src = int((lo - chunk.reference_start) * ENGINE_RATE)
            dst = int((lo - window_start) * ENGINE_RATE)
            count = min(int((hi - lo) * ENGINE_RATE), samples - dst, chunk.pcm16k.size - src)
            if count > 0:
                out[dst : dst + count] = chunk.pcm16k[src : src + count]
        return out
