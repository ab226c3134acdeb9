"""Semantic end of utterance: finished sentences end sooner, unfinished ones wait longer."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from koe.voice.config import TurnDetection
from koe.voice.endpointing import end_wait_for, is_only_fillers, looks_finished


@pytest.mark.parametrize(
    ("text", "finished"),
    [
        ("What is the weather going to be like in Paris this weekend?", True),
        ("Please book a table for four people.", True),
        ("I'd like to book a table for", False),
        ("I'd like to book a table and", False),
        ("So I was thinking, um.", False),
        ("Let me think...", False),
        ("", False),
    ],
)
def test_looks_finished(text: str, finished: bool) -> None:
    assert looks_finished(text) is finished


def test_fillers() -> None:
    assert is_only_fillers("Um, yeah.")
    assert is_only_fillers("Hmm.")
    assert not is_only_fillers("Um, stop please.")


@dataclass
class _Speculation:
    text: str | None


def test_server_vad_waits_the_silence_duration() -> None:
    wait = end_wait_for(TurnDetection(silence_duration_ms=300), lambda: None)
    assert wait(0) == 300


def test_semantic_vad_waits_by_what_was_said() -> None:
    current = _Speculation(None)
    wait = end_wait_for(
        TurnDetection(type="semantic_vad", silence_duration_ms=300, eou_timeout_ms=2000), lambda: current
    )
    assert wait(100) == 2000  # nothing transcribed yet: only the longest wait can end it
    current.text = "Book a table for four."
    assert wait(100) == 300
    current.text = "Book a table for"
    assert wait(100) == 2000


def test_eagerness_sets_both_waits() -> None:
    high = end_wait_for(TurnDetection(type="semantic_vad", eagerness="high"), lambda: _Speculation("Done."))
    low = end_wait_for(TurnDetection(type="semantic_vad", eagerness="low"), lambda: _Speculation("Done."))
    assert high(0) < low(0)


def test_no_turn_detection_never_ends_a_turn() -> None:
    assert end_wait_for(None, lambda: None)(10_000) is None
