"""What a session keeps per speaker: the input pipeline, the turn machine and the turn in progress.

`Participant` is plain state; the session and its transcription helper update it. `TurnTiming` follows one
committed turn's milestones (end of speech, commit, transcription) until its reply reports `ResponseTiming`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from koe.audio.pcm import Pcm
from koe.voice.input import ParticipantInput
from koe.voice.turns import TurnMachine

if TYPE_CHECKING:
    from koe.voice.speculation import Speculation


@dataclass
class TurnTiming:
    """Loop times of a committed turn's milestones, for the reply's `ResponseTiming`."""

    voice_end_at: float | None
    turn_end_at: float
    stt_ms: int | None = None


@dataclass
class CommittedTurn:
    """A turn's audio as it became a user item, and what is known about it."""

    participant: str | None
    item_id: str
    audio: Pcm
    start_ms: int
    end_ms: int
    speculation: Speculation | None
    timing: TurnTiming | None


class Participant:
    def __init__(self, source: ParticipantInput) -> None:
        self.input = source
        self.turn = TurnMachine()
        self.speculation: Speculation | None = None
        self.pending_barge_in = False
        """Speech over a reply that may be only filler words (`remove_filler_words`): not yet an interruption."""
        self.partial_text = ""
        self.partial_at_ms = 0
        self.partial_busy = False
        self.turn_start_ms = 0
        self.voice_end_at: float | None = None
        self.last_audio_at = 0.0
