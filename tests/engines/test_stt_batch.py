"""Transcriptions of several streams decoded together (`stt.batch_size`, `koe.engines._whisper_batch`): segments
that wait at once share one CTranslate2 call and each still comes back as its own transcript within the WER margin,
and only segments of about the same length share one;
English and Japanese waiting at once go to their own models; a segment that starts alone is decoded alone; a caller
that gives up before its turn leaves nothing behind."""

from __future__ import annotations

import asyncio
import wave
from collections.abc import Iterator

import numpy as np
import pytest

from koe.audio.pcm import Pcm
from koe.audio.resample import resample
from koe.engines._whisper_batch import MAX_LENGTH_RATIO
from koe.engines.stt_whisper import WhisperSTT
from tests.conftest import LANGUAGE_AUDIO, load_wav
from tests.wer import cer, wer

CLIPS = ("short_16k.wav", "short_22k.wav", "short_48k.wav", "short_16k.wav")
"""One sentence at three rates: segments of about the same length, which share batches (see MAX_LENGTH_RATIO)."""


@pytest.fixture(scope="module")
def stt() -> Iterator[WhisperSTT]:
    loaded = WhisperSTT.load(batch_size=4, workers=1, threads=2)
    yield loaded
    loaded.pool.shutdown()


def _clip(name: str) -> Pcm:
    pcm, rate = load_wav(name)
    return resample(pcm, rate, 16000)


def _japanese(name: str) -> Pcm:
    with wave.open(str(LANGUAGE_AUDIO / name)) as handle:
        pcm = np.frombuffer(handle.readframes(handle.getnframes()), dtype="<i2").copy()
        return resample(pcm, handle.getframerate(), 16000)


async def test_segments_waiting_together_share_a_batch(stt: WhisperSTT, texts: dict[str, str]) -> None:
    before = stt.batches
    results = await asyncio.gather(*(stt.transcribe(_clip(name)) for name in CLIPS))
    for name, result in zip(CLIPS, results, strict=True):
        assert wer(texts[name.split("_")[0]], result.text) <= 0.15, (name, result.text)
        assert result.language == "en" and result.duration_s > 1.0
    grown = {size: count - before.get(size, 0) for size, count in stt.batches.items()}
    # The first job decodes its segment alone or with those already waiting; the rest wait, and go together.
    assert sum(size * count for size, count in grown.items()) == len(CLIPS)
    assert max(size for size, count in grown.items() if count) >= 3, grown


async def test_a_much_longer_segment_gets_a_batch_of_its_own(stt: WhisperSTT, texts: dict[str, str]) -> None:
    before = stt.batches.get(1, 0)
    long, short = _clip("utterance_16k.wav"), _clip("short_16k.wav")
    assert long.size > short.size * MAX_LENGTH_RATIO
    results = await asyncio.gather(stt.transcribe(long), stt.transcribe(short))
    assert stt.batches.get(1, 0) == before + 2  # padding the short one to the long one's length would cost more
    assert wer(texts["utterance"], results[0].text) <= 0.15 and wer(texts["short"], results[1].text) <= 0.15


async def test_languages_waiting_together_go_to_their_own_models(
    stt: WhisperSTT, texts: dict[str, str], language_texts: dict[str, str]
) -> None:
    english, japanese, english_too = await asyncio.gather(
        stt.transcribe(_clip("short_16k.wav")),
        stt.transcribe(_japanese("ja_booking.wav"), language="ja-JP"),
        stt.transcribe(_clip("reply_16k.wav")),
    )
    assert english.language == english_too.language == "en" and japanese.language == "ja"
    assert wer(texts["short"], english.text) <= 0.15 and wer(texts["reply"], english_too.text) <= 0.15
    assert cer(language_texts["ja_booking"], japanese.text) <= 0.3, japanese.text


async def test_a_segment_alone_is_decoded_alone(stt: WhisperSTT, texts: dict[str, str]) -> None:
    before = stt.batches.get(1, 0)
    result = await stt.transcribe(_clip("short_16k.wav"))
    assert wer(texts["short"], result.text) <= 0.15 and stt.batches.get(1, 0) == before + 1


async def test_a_caller_that_gives_up_leaves_nothing_pending(stt: WhisperSTT) -> None:
    first = asyncio.create_task(stt.transcribe(_clip("utterance_16k.wav")))
    second = asyncio.create_task(stt.transcribe(_clip("short_16k.wav")))
    await asyncio.sleep(0)  # both queued: the first one's job may be running, the second's is waiting
    second.cancel()
    assert (await first).text
    with pytest.raises(asyncio.CancelledError):
        await second
    assert stt._batcher is not None and not stt._batcher._pending
