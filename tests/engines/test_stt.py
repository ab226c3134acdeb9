"""Whisper tiny.en on the English fixture WAVs: the right words (WER ≤ 10%), word timings in order, clear errors.

Japanese, Chinese and detection are in test_stt_languages.py, the fast path's failure modes in test_stt_fast_path.py.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from koe.audio.files import read_audio
from koe.engines.base import EngineError
from koe.engines.registry import Engines
from koe.engines.stt_whisper import WhisperSTT
from tests.wer import normalize, wer

MAX_WER = 0.10


def _stt(engines: Engines) -> WhisperSTT:
    stt = engines.require("stt")
    assert isinstance(stt, WhisperSTT)
    return stt


@pytest.mark.parametrize("key", ["utterance", "short", "reply"])
@pytest.mark.parametrize("rate", ["16k", "22k", "48k"])
def test_fixture_wavs_are_transcribed(
    engines: Engines, audio_dir: Path, texts: dict[str, str], key: str, rate: str
) -> None:
    pcm = read_audio(audio_dir / f"{key}_{rate}.wav", 16000)
    transcript = _stt(engines).transcribe_sync(pcm)
    assert wer(texts[key], transcript.text) <= MAX_WER, transcript.text
    assert transcript.duration_s == pytest.approx(pcm.size / 16000)
    assert transcript.language == "en"


async def test_word_timings_are_in_order_and_inside_the_audio(
    engines: Engines, audio_dir: Path, texts: dict[str, str]
) -> None:
    pcm = read_audio(audio_dir / "utterance_16k.wav", 16000)
    transcript = await _stt(engines).transcribe(pcm, words=True)
    words = transcript.words
    assert normalize(" ".join(w.text for w in words)) == normalize(transcript.text)  # the same transcript, in words
    assert wer(texts["utterance"], " ".join(w.text for w in words)) <= MAX_WER
    for word, following in itertools.pairwise(words):
        assert word.start_s <= word.end_s <= following.start_s + 1e-6
    assert words[0].start_s >= 0.0
    assert words[-1].end_s <= transcript.duration_s + 0.05
    assert all(0.0 <= w.probability <= 1.0 for w in words)


def test_silence_gives_no_text(engines: Engines) -> None:
    assert _stt(engines).transcribe_sync(np.zeros(16000, dtype=np.int16)).text == ""


def test_a_very_short_segment_is_padded_not_refused(engines: Engines) -> None:
    transcript = _stt(engines).transcribe_sync(np.zeros(100, dtype=np.int16))
    assert transcript.duration_s == pytest.approx(100 / 16000)


async def test_empty_segment_is_an_engine_error(engines: Engines) -> None:
    with pytest.raises(EngineError, match="empty audio segment"):
        await _stt(engines).transcribe(np.zeros(0, dtype=np.int16))


def test_unknown_languages_are_engine_errors(engines: Engines) -> None:
    stt = _stt(engines)
    assert stt.supports_language("en-US")
    assert not stt.supports_language("xx-XX")
    with pytest.raises(EngineError, match="cannot transcribe the language 'xx-XX'"):
        stt.transcribe_sync(np.zeros(16000, dtype=np.int16), language="xx-XX")


def test_without_the_multilingual_model_only_english_is_heard() -> None:
    stt = WhisperSTT.load(multilingual=False)
    assert stt.supports_language("en-GB")
    assert not stt.supports_language("ja-JP")
    assert not stt.supports_language("auto")
    with pytest.raises(EngineError, match=r"language 'ja-JP' is not supported.*English-only"):
        stt.transcribe_sync(np.zeros(16000, dtype=np.int16), language="ja-JP")
