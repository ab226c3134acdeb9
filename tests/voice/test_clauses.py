"""Cutting streamed LLM text into clauses for TTS: the first short, none split mid-word."""

from __future__ import annotations

from koe.voice.response import FIRST_CLAUSE_MAX_CHARS, ClauseSplitter


def _split(text: str, step: int = 3) -> list[str]:
    splitter = ClauseSplitter()
    clauses: list[str] = []
    for start in range(0, len(text), step):
        clauses.extend(splitter.feed(text[start : start + step]))
    return clauses + splitter.flush()


def test_sentences_and_clauses() -> None:
    text = "Sure, I can help with that. The nearest pharmacy opens at nine tomorrow morning, near the station."
    clauses = _split(text)
    assert " ".join(clauses) == text
    assert clauses[0] == "Sure, I can help with that."
    assert len(clauses) >= 3


def test_first_clause_is_cut_early_at_a_word_boundary() -> None:
    text = "It is going to be a beautiful sunny weekend in Paris with mild temperatures throughout"
    clauses = _split(text, step=2)
    assert len(clauses[0]) <= FIRST_CLAUSE_MAX_CHARS
    assert text.startswith(clauses[0]) and text[len(clauses[0])] == " "
    assert " ".join(clauses) == text


def test_markup_is_not_spoken_alone() -> None:
    assert _split("** ") == []
