"""What a session keeps per speaker: the input pipeline, the turn machine and the turn in progress.

`Participants.get(id, config)` gives the speaker's `Participant`, creating it (with its own VAD stream, echo
canceller and noise suppressor, as `config` asks) on first audio, and `configure()` applies new settings to all.
`Participant` is plain state; the session and its transcription helper update it. `TurnTiming` follows one
committed turn's milestones (end of speech, commit, transcription) until its reply reports `ResponseTiming`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

from koe.audio.pcm import ENGINE_RATE, Pcm
from koe.engines.registry import Engines
from koe.voice.config import SessionConfig
from koe.voice.endpointing import end_wait_for
from koe.voice.incremental import Heard
from koe.voice.input import ParticipantInput
from koe.voice.speculation import Speculation
from koe.voice.turns import Turn, TurnMachine

log = logging.getLogger("koe.voice")

MAX_PARTICIPANTS = 16


@dataclass
class TurnTiming:
    """Loop times of a committed turn's milestones, for the reply's `ResponseTiming`."""

    voice_end_at: float | None
    turn_end_at: float
    stt_ms: int | None = None
    speculated_at: float | None = None
    """When the speculation whose transcript the turn used began (None: transcribed at the commit)."""
    heard_at: float | None = None
    """When the turn's transcript was ready."""


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
        self.heard: Heard | None = None
        """The turn's heard prefix (`koe.voice.incremental`); the session gives it a way to transcribe."""

    def configure(self, config: SessionConfig) -> None:
        source = self.input
        source.configure(config.turn_detection)
        source.detector.end_wait_ms = end_wait_for(config.turn_detection, lambda: self.speculation)
        source.set_echo(_make_echo(config) if config.mode == "converse" else None)
        source.denoise = _make_denoise(config)


class Participants:
    """A session's speakers by participant id (None: one mixed stream), at most `MAX_PARTICIPANTS` at once."""

    def __init__(self, engines: Engines) -> None:
        self._engines = engines
        self._by_id: dict[str | None, Participant] = {}

    def __iter__(self) -> Iterator[Participant]:
        return iter(list(self._by_id.values()))

    def get(self, participant: str | None, config: SessionConfig) -> Participant:
        who = self._by_id.get(participant)
        if who is None:
            if len(self._by_id) >= MAX_PARTICIPANTS:
                self._evict_idle()
            vad = self._engines.require("vad").stream()
            who = Participant(ParticipantInput(participant, vad, config.turn_detection))
            who.configure(config)
            self._by_id[participant] = who
        return who

    def configure(self, config: SessionConfig) -> None:
        for who in self._by_id.values():
            who.configure(config)

    def _evict_idle(self) -> None:
        """Make room for a new speaker by dropping the one silent the longest (a long call's speakers change)."""
        idle = [
            (who.last_audio_at, key)
            for key, who in self._by_id.items()
            if who.turn.state is Turn.SILENCE and who.speculation is None
        ]
        if not idle:
            raise ValueError(f"a session takes at most {MAX_PARTICIPANTS} speakers at once")
        del self._by_id[min(idle, key=lambda entry: entry[0])[1]]


def _make_echo(config: SessionConfig) -> object | None:
    if not config.echo_cancellation:
        return None
    try:
        from koe.audio.echo import EchoCanceller

        return EchoCanceller(ENGINE_RATE)
    except (ImportError, RuntimeError) as exc:  # the library is missing: run without, and say so once
        log.warning("echo cancellation unavailable: %s", exc)
        return None


def _make_denoise(config: SessionConfig) -> object | None:
    if not config.noise_suppression:
        return None
    from koe.audio.denoise import NoiseSuppressor

    return NoiseSuppressor(ENGINE_RATE)
