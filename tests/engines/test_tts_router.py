"""One TTS for every language: voices route to the engine that speaks them (Piper English, Kokoro Japanese and
Chinese), each language has its configured voice, and both engines share one worker pool."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from koe.engines import _kokoro_files
from koe.engines.base import EngineError, EngineUnavailable
from koe.engines.registry import Engines
from koe.engines.tts_kokoro import ZH_FALLBACK_STYLE, KokoroTTS
from koe.engines.tts_piper import DEFAULT_VOICE, PiperTTS
from koe.engines.tts_router import TTSRouter
from tests.engines.test_tts_kokoro import CHINESE_STYLES

pytestmark = pytest.mark.models
VOICES = {"en": DEFAULT_VOICE, "ja": "jf_alpha", "zh": "zf_xiaoxiao"}


@pytest.fixture(scope="module")
def router() -> Iterator[TTSRouter]:
    tts = TTSRouter.load(DEFAULT_VOICE, voices=VOICES)
    yield tts
    tts.pool.shutdown()


def test_the_engines_tts_is_the_router(engines: Engines) -> None:
    tts = engines.require("tts")
    assert isinstance(tts, TTSRouter)
    assert tts.name == "piper:en_US-joe-medium+kokoro-82m-v1.0-int8"
    assert [pool.name for pool in engines.pools()].count("tts") == 1


@pytest.mark.parametrize(
    ("voice", "text", "rate", "backend", "language"),
    [
        (DEFAULT_VOICE, "Hello there.", 22050, "piper", "en"),
        ("jf_alpha", "こんにちは。", 24000, "kokoro", "ja"),
        ("jm_kumo", "こんにちは。", 24000, "kokoro", "ja"),
        (f"zh:{ZH_FALLBACK_STYLE}", "你好。", 24000, "kokoro", "zh"),
    ],
)
async def test_each_voice_is_spoken_by_its_engine(
    router: TTSRouter, voice: str, text: str, rate: int, backend: str, language: str
) -> None:
    info = router.voice_info(voice)
    assert (info.backend, info.language, info.rate) == (backend, language, rate)
    chunks = [chunk async for chunk in router.synthesize(text, voice)]
    assert chunks and {chunk.rate for chunk in chunks} == {rate}
    assert np.abs(np.concatenate([c.pcm for c in chunks])).max() > 3000
    assert router.pool.depth == 0


def test_every_installed_voice_is_listed_once(router: TTSRouter) -> None:
    voices = router.voices()
    assert len(voices) == len(set(voices))
    assert {DEFAULT_VOICE, "jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo"} <= set(voices)
    assert all(router.has_voice(name) for name in voices)
    assert router.default_voice == DEFAULT_VOICE
    assert router.sample_rate() == 22050 and router.sample_rate("jf_alpha") == 24000


@pytest.mark.parametrize(
    ("language", "expected"),
    [
        ("en", DEFAULT_VOICE),
        ("en-GB", DEFAULT_VOICE),
        ("ja", "jf_alpha"),
        ("ja-JP", "jf_alpha"),
        ("ko-KR", None),
        ("klingon", None),
    ],
)
def test_the_voice_for_each_language(router: TTSRouter, language: str, expected: str | None) -> None:
    assert router.voice_for(language) == expected


@pytest.mark.skipif(not CHINESE_STYLES.is_file(), reason="Kokoro's Chinese voices are not installed")
@pytest.mark.parametrize("language", ["zh", "zh-CN", "zh-TW", "cmn-Hans-CN"])
def test_the_voice_for_chinese(router: TTSRouter, language: str) -> None:
    assert router.voice_for(language) == "zf_xiaoxiao"
    assert router.voice_info("zm_yunxi").gender == "male"


def test_a_configured_voice_that_is_missing_is_replaced_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        tts = TTSRouter.load("jm_kumo", voices={"en": DEFAULT_VOICE, "ja": "jf_nobody"})
    try:
        assert "jf_nobody" in caplog.text
        assert tts.default_voice == "jm_kumo"  # a Kokoro voice can be the default too
        assert tts.voice_for("ja") == "jm_kumo"  # the default voice speaks Japanese: it is the nearest choice
        assert tts.voice_for("en") == DEFAULT_VOICE
    finally:
        tts.pool.shutdown()


def test_the_default_voice_must_be_installed() -> None:
    with pytest.raises(EngineUnavailable, match=r"'nobody' is not installed.*jf_alpha"):
        TTSRouter.load("nobody")


async def test_an_unknown_voice_is_an_engine_error(router: TTSRouter) -> None:
    with pytest.raises(EngineError, match=r"unknown voice 'nobody'.*en_US-joe-medium.*jf_alpha"):
        async for _chunk in router.synthesize("Hello.", "nobody"):
            pass
    with pytest.raises(EngineError, match="unknown voice"):
        router.voice_info("nobody")


def test_without_kokoro_english_is_still_spoken(router: TTSRouter) -> None:
    piper = PiperTTS.load(DEFAULT_VOICE, pool=router.pool)
    english_only = TTSRouter([piper], DEFAULT_VOICE, router.pool, VOICES)
    assert english_only.voice_for("ja") is None
    assert english_only.voices() == [DEFAULT_VOICE]
    assert next(english_only.synthesize_sync("Hello.")).rate == 22050


def test_preloaded_languages_are_ready_before_the_first_reply() -> None:
    tts = TTSRouter.load(DEFAULT_VOICE, voices=VOICES, preload=["ja-JP"])
    try:
        kokoro = tts._backends[1]
        assert isinstance(kokoro, KokoroTTS)
        assert kokoro._session is not None and set(kokoro._g2p) == {"ja"}
    finally:
        tts.pool.shutdown()
    with pytest.raises(EngineUnavailable, match=r"tts\.preload: no installed voice speaks 'ko'"):
        TTSRouter.load(DEFAULT_VOICE, voices=VOICES, preload=["ko"])


def test_an_unwritable_cache_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(EngineUnavailable, match=r"cannot write the model cache .*KOE_CACHE_DIR"):
        _kokoro_files.joined_model(tmp_path / "file" / "cache")
