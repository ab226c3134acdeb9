"""Japanese and Chinese text before Kokoro's G2P: what the front ends misread is rewritten, and text is cut into
one piece per model call (sentences, the first cut at its first comma when long, none too long)."""

from __future__ import annotations

import pytest

from koe.engines._cjk_text import (
    CLAUSE_PAUSE_S,
    FIRST_CHUNK_CHARS,
    MAX_CHUNK_CHARS,
    MIN_CHUNK_CHARS,
    SENTENCE_PAUSE_S,
    normalise,
    speech_chunks,
)


@pytest.mark.parametrize(
    ("language", "text", "expected"),
    [
        ("zh", "ＡＢＣ公司的１２３号。", "ABC公司的123号。"),
        ("ja", "ＡＢＣ社の１２３番です！", "ABC社の123番です！"),
        ("zh", "早上9:30见，下午14:00开会。", "早上9点30分见，下午14点开会。"),
        ("ja", "午前9:05に会いましょう。", "午前9時5分に会いましょう。"),
        ("ja", "価格は50%、約3.5円です。", "価格は50パーセント、約3点5円です。"),
        ("zh", "价格是50%，约3.5元。", "价格是50%，约3.5元。"),  # misaki's cn2an reads both
        ("ja", "比率は12:345です。", "比率は12:345です。"),  # not a time of day
        ("zh", "你好，世界！", "你好，世界！"),  # full-width punctuation stays: it carries the pauses
    ],
)
def test_normalise(language: str, text: str, expected: str) -> None:
    assert normalise(text, language) == expected


def test_one_piece_per_sentence_with_its_pause() -> None:
    chunks = speech_chunks("今天天气怎么样？我们明天去北京。好的！")
    assert [c.text for c in chunks] == ["今天天气怎么样？", "我们明天去北京。", "好的！"]
    assert {c.pause_s for c in chunks} == {SENTENCE_PAUSE_S}


def test_runs_of_marks_end_one_sentence() -> None:
    assert [c.text for c in speech_chunks("えっと……本当ですか！？はい。")] == ["えっと……", "本当ですか！？", "はい。"]


def test_a_long_first_sentence_is_cut_at_its_first_comma() -> None:
    text = "本日はお電話ありがとうございます、ご予約の日時とお名前、人数を教えていただけますでしょうか。"
    chunks = speech_chunks(text)
    assert [c.text for c in chunks] == [
        "本日はお電話ありがとうございます、",
        "ご予約の日時とお名前、人数を教えていただけますでしょうか。",
    ]
    assert [c.pause_s for c in chunks] == [CLAUSE_PAUSE_S, SENTENCE_PAUSE_S]


def test_short_first_sentences_and_later_ones_stay_whole() -> None:
    assert [c.text for c in speech_chunks("はい、そうです。")] == ["はい、そうです。"]
    assert len("はい、そうです。") <= FIRST_CHUNK_CHARS
    later = "そして、明日の会議は、午後三時から始まります。"
    assert [c.text for c in speech_chunks("はい。" + later)] == ["はい。", later]


def test_a_comma_too_early_or_too_late_does_not_cut_the_first_sentence() -> None:
    text = "ええ、明日の午後三時から会議室で打ち合わせをします。"
    assert len("ええ、") < MIN_CHUNK_CHARS
    assert [c.text for c in speech_chunks(text)] == [text]  # a call for "ええ、" alone would buy too little audio
    text = "明日の午後三時から会議室で打ち合わせ、です。"
    assert [c.text for c in speech_chunks(text)] == [text]  # what would follow the comma is too short


def test_long_sentences_are_cut_at_commas_and_never_exceed_the_limit() -> None:
    clause = "東京から大阪までの新幹線は一時間に何本も走っていて、"
    text = "はい。" + clause * 6 + "とても便利です。"
    chunks = speech_chunks(text)
    assert "".join(c.text for c in chunks) == text
    assert all(len(c.text) <= MAX_CHUNK_CHARS for c in chunks)
    assert all(c.text.endswith(("、", "。")) for c in chunks)
    unbroken = "あ" * (MAX_CHUNK_CHARS * 2 + 10)
    assert [len(c.text) for c in speech_chunks(unbroken)] == [MAX_CHUNK_CHARS, MAX_CHUNK_CHARS, 10]


def test_nothing_to_say() -> None:
    assert speech_chunks("") == []
    assert speech_chunks("  \n ") == []
