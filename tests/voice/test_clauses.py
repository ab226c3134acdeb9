"""Cutting streamed LLM text into clauses for TTS: the first short, none split mid-word, Japanese and Chinese at
their own punctuation (no space follows it), and transcript deltas joined without spaces between them."""

from __future__ import annotations

import pytest

from koe.voice.response import FIRST_CLAUSE_MAX_CHARS, ClauseSplitter, spaced


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
    assert clauses[:2] == ["Sure,", "I can help with that."]  # the first clause is a few words: first audio sooner
    assert len(clauses) >= 4


def test_first_clause_is_cut_early_at_a_word_boundary() -> None:
    text = "Tomorrow looks beautiful and sunny across Paris with mild temperatures throughout"
    clauses = _split(text, step=2)
    assert clauses[0] == "Tomorrow"  # the last space at or before FIRST_LATIN_CLAUSE_MAX_CHARS
    assert " ".join(clauses) == text


@pytest.mark.parametrize("step", [1, 2, 4])
@pytest.mark.parametrize(
    ("text", "first"),
    [
        ("The capital of France is Paris.", "The capital of"),
        ("I can help you book a table for two.", "I can help you"),
        ("It is going to be a beautiful sunny weekend in Paris", "It is going to be a"),
    ],
)
def test_the_next_clause_does_not_begin_with_a_short_word(text: str, first: str, step: int) -> None:
    """Piper says an unstressed word that begins an utterance weakly ("of France is Paris." was heard as "a Francis
    Paris."), so the first clause takes the short words after its cut with it, as they arrive in any deltas."""
    clauses = _split(text, step=step)
    assert clauses[0] == first
    assert len(first) <= FIRST_CLAUSE_MAX_CHARS
    assert " ".join(clauses) == text


def test_markup_is_not_spoken_alone() -> None:
    assert _split("** ") == []


def test_japanese_clauses_end_at_their_own_marks_without_spaces() -> None:
    text = "はい、わかりました。明日の東京の天気は晴れのち曇りで、午後からは雨が降るでしょう。傘をお持ちください！"
    clauses = _split(text, step=2)
    assert "".join(clauses) == text
    assert clauses == [
        "はい、わかりました。",  # "はい、" alone is too short to be worth a call of its own
        "明日の東京の天気は晴れのち曇りで、午後からは雨が降るでしょう。",
        "傘をお持ちください！",
    ]


def test_chinese_clauses_end_at_full_width_marks() -> None:
    text = "您好，欢迎致电北京饭店。请问您想预订几点的座位？我们今晚七点以后还有空位；明天全天都可以。"
    clauses = _split(text)
    assert "".join(clauses) == text
    assert clauses[0] == "您好，欢迎致电北京饭店。"
    assert clauses[1:] == ["请问您想预订几点的座位？", "我们今晚七点以后还有空位；明天全天都可以。"]


def test_the_first_japanese_clause_ends_at_its_first_comma_when_the_sentence_is_long() -> None:
    text = "本日はお電話ありがとうございます、ご予約の日時とお名前を教えていただけますか？"
    clauses = _split(text, step=1)
    assert clauses == ["本日はお電話ありがとうございます、", "ご予約の日時とお名前を教えていただけますか？"]


def test_a_japanese_first_clause_without_punctuation_is_cut_where_a_phrase_begins() -> None:
    text = "東京の明日の天気は晴れのち曇りでしょうそれから大阪の明日の天気は雨でしょう"
    clauses = _split(text, step=1)
    assert "".join(clauses) == text
    assert len(clauses[0]) <= FIRST_CLAUSE_MAX_CHARS
    assert clauses[0].endswith("の") and clauses[1][0] not in "のはがをにで"  # not inside a word


def test_ascii_marks_inside_japanese_text_and_quotes_after_marks() -> None:
    assert _split("明日は晴れです!次は雨です。") == ["明日は晴れです!", "次は雨です。"]
    assert _split("彼は「もう大丈夫です。」と言いました。") == ["彼は「もう大丈夫です。」", "と言いました。"]


def test_english_mixed_into_japanese_keeps_its_own_rules() -> None:
    text = "Sure, I can help. 東京駅の近くには薬局が三つあります。"
    assert _split(text) == ["Sure,", "I can help.", "東京駅の近くには薬局が三つあります。"]


@pytest.mark.parametrize(
    ("previous", "clause", "expected"),
    [
        ("Sure, I can help with that.", "The pharmacy opens at nine.", " The pharmacy opens at nine."),
        ("はい、わかりました。", "明日は晴れです。", "明日は晴れです。"),
        ("您好，欢迎致电北京饭店。", "请问您想预订几点？", "请问您想预订几点？"),
        ("Sure.", "東京です。", "東京です。"),
        ("東京です", "Sure.", "Sure."),
        ("", "Hello.", "Hello."),
    ],
)
def test_transcript_deltas_get_a_space_only_between_words_that_need_one(
    previous: str, clause: str, expected: str
) -> None:
    assert spaced(previous, clause) == expected
