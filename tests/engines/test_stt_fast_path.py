"""Whisper without its 30 s padding (koe.engines._whisper_decode): the same transcripts as the padded call, and
its failure modes (a restart, a loop, silence, very short and very long segments) handled or handed to the padded
call.

The repetition guard is checked on outputs the fast path really produced while its padding was being tuned (they
are the shapes a shortened window fails in); the rest runs the real models on the fixtures.
"""

from __future__ import annotations

import statistics

import numpy as np
import pytest

import koe.engines._whisper_decode as decode
from koe.audio.files import read_audio
from koe.audio.pcm import Pcm, pcm_to_float
from koe.engines._whisper_decode import WhisperDecoder, _dedupe, _restart
from koe.engines.registry import Engines
from koe.engines.stt_whisper import WhisperSTT
from tests.conftest import AUDIO, LANGUAGE_AUDIO
from tests.wer import cer, wer

pytestmark = pytest.mark.models

ENGLISH = ("utterance", "short", "reply")


@pytest.mark.parametrize(
    ("text", "capped", "kept"),
    [
        # the decoder read everything and started over (tiny.en and base, padding of 50-100 frames)
        (
            " What is the weather going to be like in Paris this weekend? What is the",
            True,
            " What is the weather going to be like in Paris this weekend?",
        ),
        (
            " Thank you so much for your help today. Thank you so much for your",
            True,
            " Thank you so much for your help today.",
        ),
        ("明日の天気はどうなりますか?明日", True, "明日の天気はどうなりますか?"),
        ("東京から大阪まで新幹線でいきます東京から大", True, "東京から大阪まで新幹線でいきます"),
        (" No No No No No No", True, " No"),
        (" Where Where Where Where Where Where", True, " Where"),
        # a full restart before the bound, after a sentence end
        (" I need a taxi to the airport. I need a taxi", False, " I need a taxi to the airport."),
        # a sentence that opens like the first again, then strays (a 2 s Piper reply, tiny.en): the padded call
        (
            " The capital of Francis, Paris. Paris. The capital of France.",
            False,
            " The capital of Francis, Paris. Paris.",
        ),
        # real speech that repeats itself stays
        (" bye bye bye", False, " bye bye bye"),
        (" the cat and the cat", False, " the cat and the cat"),
        (" Yes Yes That works for me that works for me that works", True, None),  # no restart: the padded call
        ("今天天气怎么样", False, "今天天气怎么样"),
    ],
)
def test_the_guard_cuts_a_restart(text: str, capped: bool, kept: str | None) -> None:
    assert _restart(text, capped) == (text if kept is None else kept)


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        (" No. No.", " No."),
        (" Sure. Sure. I can help.", " Sure. I can help."),
        ("好的。好的。", "好的。"),
        (" Yes. No. Yes.", " Yes. No. Yes."),
        (" Hello", " Hello"),
    ],
)
def test_the_guard_drops_a_sentence_said_twice(text: str, kept: str) -> None:
    assert _dedupe(text) == kept


def _english(key: str) -> Pcm:
    return read_audio(AUDIO / f"{key}_16k.wav", 16000)


def _stt(engines: Engines) -> WhisperSTT:
    stt = engines.require("stt")
    assert isinstance(stt, WhisperSTT)
    return stt


def _decoders(engines: Engines) -> tuple[WhisperDecoder, WhisperDecoder]:
    stt = _stt(engines)
    stt.transcribe_sync(np.zeros(1600, dtype=np.int16), language="ja")  # loads the multilingual model
    decoders = stt.decoders
    return decoders["tiny.en"], decoders["base"]


def test_the_fast_paths_encoder_input_takes_few_shapes_whatever_the_length() -> None:
    # CTranslate2 builds and caches its kernels per input shape: one shape per utterance length grew memory by about
    # 1 MB per new length, up to the 1,024 kernels oneDNN keeps.
    shapes = {decode.fast_frames(decode._frames(samples)) for samples in range(1, 28 * 16000, 37)}
    assert len(shapes) <= decode.WINDOW_FRAMES // decode.FRAME_BUCKET
    assert all(shape % decode.FRAME_BUCKET == 0 and shape <= decode.WINDOW_FRAMES for shape in shapes)
    for samples in (1, 16000, 27 * 16000):
        assert decode.fast_frames(decode._frames(samples)) - decode._frames(samples) >= decode.PAD_FRAMES


def test_fast_and_padded_calls_agree_on_the_fixtures(
    engines: Engines, texts: dict[str, str], language_texts: dict[str, str]
) -> None:
    english, multilingual = _decoders(engines)
    cases = [(english, "en", _english(key), texts[key]) for key in ENGLISH]
    cases += [(multilingual, "en", _english(key), texts[key]) for key in ENGLISH]
    cases += [
        (multilingual, name[:2], read_audio(LANGUAGE_AUDIO / f"{name}.wav", 16000), text)
        for name, text in language_texts.items()
    ]
    errors: dict[str, list[tuple[float, float]]] = {}
    for decoder, code, pcm, reference in cases:
        audio = pcm_to_float(pcm)
        before = decoder.counts.fast
        fast = decoder.decode(audio, code, None)
        assert fast.path == "fast" and decoder.counts.fast == before + 1
        padded = decoder.decode(audio, code, None, padded=True)
        assert padded.path == "padded"
        score = wer if code == "en" else cer
        errors.setdefault(f"{decoder.path.name}:{code}", []).append(
            (score(reference, fast.text), score(reference, padded.text))
        )
    for key, pairs in errors.items():
        fast_mean = statistics.mean(f for f, _p in pairs)
        padded_mean = statistics.mean(p for _f, p in pairs)
        assert fast_mean <= padded_mean + 0.05, (key, pairs)


def test_the_decoder_on_fewer_threads_writes_what_one_copy_writes(
    engines: Engines, language_texts: dict[str, str]
) -> None:
    # stt.decode_threads (1 by default, against 2 threads for the encoder): the fast path decodes on a second copy
    # of the model. It is the same model, so the same text comes out, in English and in the multilingual model.
    english, multilingual = _decoders(engines)
    assert english.generator is not None and multilingual.generator is not None
    one_copy = WhisperSTT.load(threads=2, decode_threads=None, multilingual=True, preload_multilingual=True)
    one_english, one_multilingual = one_copy.decoders["tiny.en"], one_copy.decoders["base"]
    assert one_english.generator is None  # it decodes with the model's own
    cases = [(english, one_english, "en", _english(key)) for key in ENGLISH]
    cases += [
        (multilingual, one_multilingual, name[:2], read_audio(LANGUAGE_AUDIO / f"{name}.wav", 16000))
        for name in list(language_texts)[:2]
    ]
    for decoder, reference, code, pcm in cases:
        audio = pcm_to_float(pcm)
        assert decoder.decode(audio, code, None) == reference.decode(audio, code, None)


@pytest.mark.parametrize("language", ["en", "ja", "auto"])
@pytest.mark.parametrize("seconds", [0.2, 1.0, 5.0])
def test_silence_gives_no_text_on_the_fast_path(engines: Engines, language: str, seconds: float) -> None:
    transcript = _stt(engines).transcribe_sync(np.zeros(round(seconds * 16000), dtype=np.int16), language=language)
    assert transcript.text == ""


@pytest.mark.parametrize("language", ["en", "ja", "auto"])
def test_faint_noise_is_not_decoded(engines: Engines, language: str) -> None:
    """Below `INAUDIBLE_PEAK` nothing is decoded at all: Whisper's no-speech test alone was marginal on silence."""
    noise = np.random.default_rng(7).integers(-20, 21, 32000).astype(np.int16)  # a peak of about -64 dBFS
    counts = [(d.counts.fast, d.counts.padded, d.counts.fallback) for d in _decoders(engines)]
    transcript = _stt(engines).transcribe_sync(noise, language=language)
    assert transcript.text == ""
    assert transcript.language == ("ja" if language == "ja" else "en")
    assert [(d.counts.fast, d.counts.padded, d.counts.fallback) for d in _decoders(engines)] == counts


def test_quiet_speech_is_still_heard(engines: Engines, texts: dict[str, str]) -> None:
    """The silence gate stays far below speech: an utterance peaking at -40 dBFS is transcribed as usual."""
    pcm = _english("utterance").astype(np.float64)
    quiet = np.round(pcm * (328 / np.max(np.abs(pcm)))).astype(np.int16)
    transcript = _stt(engines).transcribe_sync(quiet)
    assert wer(texts["utterance"], transcript.text) <= 0.2, transcript.text


@pytest.mark.parametrize("language", ["en", "auto"])
def test_a_fifth_of_a_second_of_speech_gives_a_few_words_at_most(engines: Engines, language: str) -> None:
    pcm = _english("short")[:3200]
    transcript = _stt(engines).transcribe_sync(pcm, language=language)
    assert len(transcript.text.split()) <= 3, transcript.text  # the bound: 8 tokens/s + 8


def _long(seconds: float, texts: dict[str, str]) -> tuple[Pcm, str]:
    """English fixtures one after another, with half a second between them, then silence, `seconds` long."""
    pieces: list[Pcm] = []
    words: list[str] = []
    gap = np.zeros(8000, dtype=np.int16)
    total = 0
    while True:
        for key in ENGLISH:
            clip = _english(key)
            if (total + clip.size + gap.size) / 16000 > seconds:
                tail = np.zeros(round(seconds * 16000) - total, dtype=np.int16)
                return np.concatenate((*pieces, tail)), " ".join(words)
            pieces += [clip, gap]
            words.append(texts[key])
            total += clip.size + gap.size


def test_a_segment_of_25_s_and_more_takes_the_fast_path(engines: Engines, texts: dict[str, str]) -> None:
    """27.5 s holding a sentence said twice: the fast path, or the padded call after the guard saw the repeat."""
    english, _multilingual = _decoders(engines)
    pcm, reference = _long(27.5, texts)
    assert pcm.size / 16000 > 25
    before = english.counts.fast + english.counts.fallback
    transcript = _stt(engines).transcribe_sync(pcm)
    assert english.counts.fast + english.counts.fallback == before + 1
    assert wer(reference, transcript.text) <= 0.10, transcript.text


def test_segments_too_long_for_the_window_take_the_padded_call(engines: Engines, texts: dict[str, str]) -> None:
    english, _multilingual = _decoders(engines)
    for seconds in (29.5, 45.0):
        pcm, reference = _long(seconds, texts)
        before = english.counts.padded
        transcript = _stt(engines).transcribe_sync(pcm)
        assert english.counts.padded == before + 1
        assert wer(reference, transcript.text) <= 0.10, transcript.text


def test_an_output_that_reaches_the_bound_goes_to_the_padded_call(
    engines: Engines, texts: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    english, _multilingual = _decoders(engines)
    monkeypatch.setattr(decode, "TOKENS_PER_S", 0)
    monkeypatch.setattr(decode, "EXTRA_TOKENS", 3)  # three tokens: every utterance reaches the bound
    before = english.counts.fallback
    result = english.decode(pcm_to_float(_english("utterance")), "en", None)
    assert result.path == "fallback" and english.counts.fallback == before + 1
    assert wer(texts["utterance"], result.text) <= 0.10


def test_word_timings_take_the_padded_call(engines: Engines) -> None:
    english, _multilingual = _decoders(engines)
    before = english.counts.padded
    transcript = _stt(engines).transcribe_sync(_english("short"), words=True)
    assert english.counts.padded == before + 1 and transcript.words
