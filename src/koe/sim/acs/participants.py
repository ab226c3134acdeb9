"""What the simulated callers say: participants with their audio placed on the call's timeline, cut into the 20 ms
frames ACS would send, mixed or unmixed.

Build `Participant`s (from WAVs with `Participant.from_file`, or PCM at the stream rate), then a `CallAudio`, and
ask it for `frames(tick)` for tick 0, 1, 2… until `ticks`. Raw IDs look like real ones: `phone_raw_id(1)` is
`4:+15550100001`, `acs_raw_id()` is `8:acs:<resource>_<user>`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from koe.audio.files import read_audio
from koe.audio.mix import mix
from koe.audio.pcm import Pcm, samples_for_ms
from koe.protocols.acs import FRAME_MS

SilencePolicy = Literal["continuous", "empty", "suppress"]
"""How silent frames go out: full-size zero PCM with `silent:true` (the default, 50 frames/s), `silent:true` with
empty `data`, or not at all. Which one ACS does is undocumented (spec §2.8)."""

MAX_UNMIXED_CHANNELS = 4
"""ACS sends up to four channels, the four most dominant speakers."""
SILENCE_PEAK = 64
"""A frame whose samples all stay within ±64 (about -54 dBFS) counts as silent."""
ONSET_GAP_MS = 300
"""Speech after at least this much silence is a new onset (for barge-in timing)."""


def phone_raw_id(n: int) -> str:
    """A PSTN participant's raw ID, in the 555-01xx range reserved for fiction."""
    return f"4:+1555010{n:04d}"


def acs_raw_id(resource_id: str | None = None) -> str:
    resource = resource_id or str(uuid.uuid4())
    user = uuid.uuid4().hex
    return f"8:acs:{resource}_0000000{user[:1]}-{user[1:5]}-{user[5:9]}-{user[9:13]}-{user[13:25]}"


@dataclass(frozen=True)
class Participant:
    raw_id: str
    pcm: Pcm
    """Speech at the stream's rate."""
    start_ms: int = 0
    """Where on the call timeline this participant starts speaking."""

    @classmethod
    def from_file(cls, path: str | Path, rate: int, raw_id: str, start_ms: int = 0) -> Participant:
        return cls(raw_id, read_audio(Path(path), rate), start_ms)


@dataclass(frozen=True, slots=True)
class Frame:
    participant_raw_id: str | None
    pcm: bytes
    silent: bool


class CallAudio:
    """The inbound side of a call, frame by frame."""

    def __init__(
        self,
        participants: Sequence[Participant],
        rate: int,
        *,
        mixed: bool = True,
        silence: SilencePolicy = "continuous",
        tail_ms: int = 0,
        mixed_participant_id: str | None = None,
    ) -> None:
        if not participants:
            raise ValueError("a call needs at least one participant")
        self.rate = rate
        self.mixed = mixed
        self.silence = silence
        self.mixed_participant_id = mixed_participant_id
        self.frame_samples = samples_for_ms(rate, FRAME_MS)
        ends = [samples_for_ms(rate, p.start_ms) + p.pcm.size for p in participants]
        total = max(ends) + samples_for_ms(rate, tail_ms)
        self.ticks = -(-total // self.frame_samples)
        length = self.ticks * self.frame_samples
        self.raw_ids = [p.raw_id for p in participants]
        self._tracks = np.zeros((len(participants), length), dtype=np.int16)
        for row, participant in enumerate(participants):
            start = samples_for_ms(rate, participant.start_ms)
            self._tracks[row, start : start + participant.pcm.size] = participant.pcm
        framed = self._tracks.reshape(len(participants), self.ticks, self.frame_samples)
        self._silent = np.abs(framed.astype(np.int32)).max(axis=2) <= SILENCE_PEAK
        self._energy = np.square(framed.astype(np.float64)).sum(axis=2)
        self._last_active = np.full(len(participants), -1, dtype=np.int64)

    @property
    def duration_ms(self) -> int:
        return self.ticks * FRAME_MS

    def mixed_track(self) -> Pcm:
        """Everything the callers say, mixed: what a listener on the call hears from them."""
        return mix(list(self._tracks))

    def frames(self, tick: int) -> list[Frame]:
        """The messages to send for 20 ms tick `tick` (past the end: silence), after the silence policy."""
        if tick >= self.ticks:
            if self.silence == "suppress":
                return []
            ids = [self.mixed_participant_id] if self.mixed else self.raw_ids[:MAX_UNMIXED_CHANNELS]
            return [self._silent_frame(raw_id) for raw_id in ids]
        if self.mixed:
            pcm = mix(list(self._tracks[:, tick * self.frame_samples : (tick + 1) * self.frame_samples]))
            frames = [Frame(self.mixed_participant_id, pcm.tobytes(), bool(self._silent[:, tick].all()))]
        else:
            frames = [
                Frame(self.raw_ids[row], self._slice(row, tick), bool(self._silent[row, tick]))
                for row in self._channels(tick)
            ]
        return [self._apply_policy(frame) for frame in frames if not (frame.silent and self.silence == "suppress")]

    def speech_onsets_ms(self) -> list[tuple[int, str]]:
        """(time, raw ID) of each participant's speech starts: the first loud frame after `ONSET_GAP_MS` quiet."""
        gap = ONSET_GAP_MS // FRAME_MS
        onsets: list[tuple[int, str]] = []
        for row, raw_id in enumerate(self.raw_ids):
            quiet = gap
            for tick, silent in enumerate(self._silent[row]):
                if silent:
                    quiet += 1
                    continue
                if quiet >= gap:
                    onsets.append((tick * FRAME_MS, raw_id))
                quiet = 0
        return sorted(onsets)

    def _channels(self, tick: int) -> list[int]:
        # The four most dominant speakers: whoever spoke most recently, loudest first within a tick; the set changes
        # as speakers change, and with four or fewer participants everyone keeps a channel.
        active = ~self._silent[:, tick]
        self._last_active[active] = tick
        count = len(self.raw_ids)
        if count <= MAX_UNMIXED_CHANNELS:
            return list(range(count))
        order = sorted(range(count), key=lambda row: (-self._last_active[row], -self._energy[row, tick], row))
        return sorted(order[:MAX_UNMIXED_CHANNELS])

    def _slice(self, row: int, tick: int) -> bytes:
        return self._tracks[row, tick * self.frame_samples : (tick + 1) * self.frame_samples].tobytes()

    def _silent_frame(self, raw_id: str | None) -> Frame:
        return self._apply_policy(Frame(raw_id, bytes(self.frame_samples * 2), True))

    def _apply_policy(self, frame: Frame) -> Frame:
        if not frame.silent:
            return frame
        if self.silence == "empty":
            return Frame(frame.participant_raw_id, b"", True)
        return Frame(frame.participant_raw_id, bytes(self.frame_samples * 2), True)
