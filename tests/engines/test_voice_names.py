"""Voice names as the doors receive them: Azure's (Voice Live) map to the nearest installed voice of their
language and speaker's gender, OpenAI's to the voice of the session's language, unknown ones to the default."""

from __future__ import annotations

import pytest

from koe.engines.base import TTS
from koe.engines.registry import Engines
from koe.engines.voice_names import OPENAI_VOICES, AzureVoice, azure_voice, choose_voice
from tests.engines.test_tts_kokoro import CHINESE_STYLES

pytestmark = pytest.mark.models
JOE = "en_US-joe-medium"
needs_chinese_styles = pytest.mark.skipif(not CHINESE_STYLES.is_file(), reason="Kokoro's Chinese voices are absent")


@pytest.fixture(scope="module")
def tts(engines: Engines) -> TTS:
    return engines.require("tts")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ja-JP-NanamiNeural", AzureVoice("ja-JP-NanamiNeural", "ja", "Nanami", "female", False)),
        ("ja-JP-KeitaNeural", AzureVoice("ja-JP-KeitaNeural", "ja", "Keita", "male", False)),
        ("zh-CN-XiaoxiaoNeural", AzureVoice("zh-CN-XiaoxiaoNeural", "zh", "Xiaoxiao", "female", False)),
        ("zh-CN-YunxiNeural", AzureVoice("zh-CN-YunxiNeural", "zh", "Yunxi", "male", False)),
        ("zh-TW-HsiaoChenNeural", AzureVoice("zh-TW-HsiaoChenNeural", "zh", "HsiaoChen", "female", False)),
        ("zh-CN-XiaoqingNeural", AzureVoice("zh-CN-XiaoqingNeural", "zh", "Xiaoqing", "female", False)),  # by prefix
        ("zh-CN-liaoning-XiaobeiNeural", AzureVoice("zh-CN-liaoning-XiaobeiNeural", "zh", "Xiaobei", "female", False)),
        ("en-US-AvaNeural", AzureVoice("en-US-AvaNeural", "en", "Ava", "female", False)),
        ("en-US-Ava:DragonHDLatestNeural", AzureVoice("en-US-Ava:DragonHDLatestNeural", "en", "Ava", "female", True)),
        ("en-US-AvaMultilingualNeural", AzureVoice("en-US-AvaMultilingualNeural", "en", "Ava", "female", True)),
        (
            "en-US-AlloyTurboMultilingualNeural",
            AzureVoice("en-US-AlloyTurboMultilingualNeural", "en", "Alloy", None, True),
        ),
        ("en-GB-RyanNeural", AzureVoice("en-GB-RyanNeural", "en", "Ryan", "male", False)),
        ("ko-KR-SunHiNeural", AzureVoice("ko-KR-SunHiNeural", "ko", "SunHi", None, False)),
    ],
)
def test_azure_names_are_taken_apart(name: str, expected: AzureVoice) -> None:
    assert azure_voice(name) == expected


@pytest.mark.parametrize("name", ["alloy", "jf_alpha", "ja-JP-Nanami", "NanamiNeural", "xx-YY-FooNeural", ""])
def test_other_names_are_not_azure_voices(name: str) -> None:
    assert azure_voice(name) is None


@pytest.mark.parametrize(
    ("requested", "language", "voice", "exact"),
    [
        ("jf_alpha", None, "jf_alpha", True),
        ("jm_kumo", "zh", "jm_kumo", True),  # an installed voice wins over the session's language
        (JOE, "ja", JOE, True),
        ("ja-JP-NanamiNeural", None, "jf_alpha", False),
        ("ja-JP-NanamiNeural", "en", "jf_alpha", False),  # not multilingual: it speaks its own language
        ("ja-JP-KeitaNeural", None, "jm_kumo", False),
        ("ja-JP-AoiNeural", "ja-JP", "jf_alpha", False),
        ("en-US-AvaNeural", None, JOE, False),  # the one English voice, whatever its gender
        ("en-US-Ava:DragonHDLatestNeural", "ja", "jf_alpha", False),  # multilingual: the session's language
        ("en-US-AvaMultilingualNeural", None, JOE, False),
    ],
)
def test_the_voice_chosen_for_a_name(tts: TTS, requested: str, language: str | None, voice: str, exact: bool) -> None:
    choice = choose_voice(tts, requested, language)
    assert (choice.voice, choice.exact, choice.note) == (voice, exact, None)


@needs_chinese_styles
@pytest.mark.parametrize(
    ("requested", "language", "voice", "exact"),
    [
        ("zh-CN-XiaoxiaoNeural", None, "zf_xiaoxiao", True),  # Kokoro's Chinese voices bear Azure speakers' names
        ("zh-CN-YunxiNeural", None, "zm_yunxi", True),
        ("zh-CN-YunyangNeural", "ja", "zm_yunyang", True),
        ("zh-CN-liaoning-XiaobeiNeural", None, "zf_xiaobei", True),
        ("zh-CN-XiaohanNeural", None, "zf_xiaoxiao", False),  # a woman: the configured voice is one
        ("zh-TW-HsiaoChenNeural", None, "zf_xiaoxiao", False),
        ("zh-TW-YunJheNeural", None, "zm_yunjian", False),  # a man: the first installed male Chinese voice
        ("zh-CN-Xiaoxiao:DragonHDFlashLatestNeural", "ja", "jf_alpha", False),
        ("en-US-AvaMultilingualNeural", "zh-CN", "zf_xiaoxiao", False),
    ],
)
def test_the_chinese_voice_chosen_for_a_name(
    tts: TTS, requested: str, language: str | None, voice: str, exact: bool
) -> None:
    choice = choose_voice(tts, requested, language)
    assert (choice.voice, choice.exact, choice.note) == (voice, exact, None)


@pytest.mark.parametrize("name", sorted(OPENAI_VOICES))
def test_openai_names_mean_the_voice_of_the_session_language(tts: TTS, name: str) -> None:
    assert choose_voice(tts, name).voice == JOE
    assert choose_voice(tts, name, "ja-JP").voice == "jf_alpha"
    assert choose_voice(tts, name.upper(), "ja").voice == "jf_alpha"
    assert choose_voice(tts, name, "ko").voice == JOE  # no Korean voice: the default
    assert choose_voice(tts, name, "ja").note is None


def test_unknown_names_fall_back_with_a_note(tts: TTS) -> None:
    choice = choose_voice(tts, "no-such-voice", "ja")
    assert choice.voice == "jf_alpha" and not choice.exact
    assert choice.note is not None and "'no-such-voice' is not installed" in choice.note
    korean = choose_voice(tts, "ko-KR-SunHiNeural", "ja")
    assert korean.voice == "jf_alpha"
    assert korean.note is not None and "no installed voice speaks 'ko'" in korean.note
    assert choose_voice(tts, None).voice == JOE
    assert choose_voice(tts, "", "ja").voice == "jf_alpha"
