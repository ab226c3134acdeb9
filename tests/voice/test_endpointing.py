"""Semantic end of utterance: finished sentences end sooner, unfinished ones wait longer."""

from __future__ import annotations

from dataclasses import dataclass, replace

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
        # Questions that end in a pronoun or a preposition are finished; a trailing "and", "so", "but" never is.
        ("What time is it?", True),
        ("What is the weather going to be like?", True),
        ("What is this for?", True),
        ("How are you?", True),
        ("I think I love you.", True),
        ("And?", False),
        ("I wanted to ask about the weather, and so.", False),
        ("I'd like to go, but", False),
        ("The weather is nice, but.", False),
        ("Tell me about Paris,", False),
        ("明日の天気は?", True),
        ("明日の天気は。", True),
        ("明日の天気は、", False),
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


def test_a_finished_utterance_ends_after_the_same_silence_as_server_vad() -> None:
    for eagerness in ("low", "medium", "high", "auto"):
        td = TurnDetection(type="semantic_vad", silence_duration_ms=200, eagerness=eagerness)  # type: ignore[arg-type]
        assert end_wait_for(td, lambda: _Speculation("What time is it?"))(0) == 200


@pytest.mark.parametrize(("eagerness", "timeout_ms"), [("high", 2000), ("medium", 4000), ("auto", 4000), ("low", 8000)])
def test_an_unfinished_one_waits_up_to_the_eagerness_timeout(eagerness: str, timeout_ms: int) -> None:
    td = TurnDetection(type="semantic_vad", silence_duration_ms=200, eagerness=eagerness)  # type: ignore[arg-type]
    assert end_wait_for(td, lambda: _Speculation("I'd like a table, and"))(0) == timeout_ms
    assert end_wait_for(replace(td, eou_timeout_ms=1500), lambda: _Speculation("and"))(0) == 1500


def test_no_turn_detection_never_ends_a_turn() -> None:
    assert end_wait_for(None, lambda: None)(10_000) is None
