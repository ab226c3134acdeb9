"""Language tags as clients write them, to the Whisper code and Chinese script koe's models need."""

from __future__ import annotations

import pytest

from koe.languages import (
    Language,
    UnsupportedLanguage,
    client_language,
    language_name,
    parse_language,
    script_language,
)


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("ja-JP", Language("ja-JP", "ja")),
        ("en-US", Language("en-US", "en")),
        ("en-GB", Language("en-GB", "en")),
        ("ko-KR", Language("ko-KR", "ko")),
        ("en", Language("en", "en")),
        ("zh-CN", Language("zh-CN", "zh", "Hans")),
        ("zh-SG", Language("zh-SG", "zh", "Hans")),
        ("zh", Language("zh", "zh", "Hans")),
        ("zh-TW", Language("zh-TW", "zh", "Hant")),
        ("zh-HK", Language("zh-HK", "zh", "Hant")),
        ("zh-Hant", Language("zh-Hant", "zh", "Hant")),
        ("zh-Hans-TW", Language("zh-Hans-TW", "zh", "Hans")),
        ("cmn-Hant-TW", Language("cmn-Hant-TW", "zh", "Hant")),
        ("zh_tw", Language("zh_tw", "zh", "Hant")),
        ("yue-HK", Language("yue-HK", "yue", "Hant")),
        ("iw-IL", Language("iw-IL", "he")),
        (" ja ", Language("ja", "ja")),
    ],
)
def test_tags_name_whisper_languages(tag: str, expected: Language) -> None:
    assert parse_language(tag) == expected


@pytest.mark.parametrize("tag", ["", "-", "xx-XX", "klingon", "auto"])
def test_unknown_tags_are_refused_by_name(tag: str) -> None:
    with pytest.raises(UnsupportedLanguage, match="language"):
        parse_language(tag)


def test_names_are_openais() -> None:
    assert language_name("en") == "english"
    assert language_name("ht") == "haitian creole"
    assert language_name("xx") == "xx"
    assert parse_language("ja-JP").name == "japanese"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("明日の天気はどうなりますか。", "ja"),
        ("カタカナだけ", "ja"),
        ("ｶﾀｶﾅ", "ja"),
        ("今天天气怎么样？", "zh"),
        ("這是一個測試", "zh"),
        ("東京都", "zh"),  # kanji alone look Chinese: the guess is by script
        ("Hello, world.", None),
        ("", None),
    ],
)
def test_script_language(text: str, expected: str | None) -> None:
    assert script_language(text) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("  ", None),
        ("ja-JP", "ja-JP"),
        (" zh-TW ", "zh-TW"),
        ("auto", "auto"),
        ("AUTO", "AUTO"),
        ("en,zh", "auto"),  # Voice Live's multi-language form: detection per utterance
        ("en-US, ja-JP", "auto"),
        ("ja-JP,", "ja-JP"),  # a list of one is that language
        ("en-US,en-GB", "en-US"),  # one language in two regions
        ("en,auto", "auto"),
    ],
)
def test_client_language_reads_every_doors_forms(value: str | None, expected: str | None) -> None:
    assert client_language(value) == expected


@pytest.mark.parametrize("value", ["xx-YY", "en,qq", ",", "klingon"])
def test_client_language_names_what_is_no_language(value: str) -> None:
    with pytest.raises(UnsupportedLanguage):
        client_language(value)
