"""The cheap parts of `koe bench speech`: its clips, the telephone band and the babble, and the scores."""

from __future__ import annotations

import numpy as np

from koe.bench import speech as bench
from koe.bench.scoring import cer, wer


def test_every_language_has_clips_and_the_size_flag_keeps_the_first() -> None:
    clips = bench.load_clips()
    assert {clip.language for clip in clips} == {"en", "ja", "zh"}
    assert all(clip.pcm.dtype == np.int16 and clip.pcm.size > 16000 and clip.text for clip in clips)
    few = bench.load_clips(1)
    assert [clip.language for clip in few] == ["en", "ja", "zh"]


def test_babble_is_deterministic_at_its_snr() -> None:
    clips = bench.load_clips()
    clip = clips[4]
    noisy = bench.babble(clip, clips)
    assert np.array_equal(noisy, bench.babble(clip, clips))
    speech = clip.pcm.astype(np.float64)
    noise = noisy.astype(np.float64) - speech
    snr = 10 * np.log10(np.mean(speech**2) / np.mean(noise**2))
    assert abs(snr - bench.BABBLE_SNR_DB) < 0.1


def test_the_telephone_band_ends_at_4_khz() -> None:
    clip = bench.load_clips(1)[0]
    phone = bench.telephone(clip.pcm)
    assert abs(phone.size - clip.pcm.size) <= 2
    spectrum = np.abs(np.fft.rfft(phone.astype(np.float64)))
    frequencies = np.fft.rfftfreq(phone.size, 1 / 16000)
    assert spectrum[frequencies > 4200].sum() < 0.01 * spectrum.sum()


def test_scores_normalise_what_a_listener_does_not_hear() -> None:
    assert wer("Opens at nine tomorrow.", "opens at 9 tomorrow") == 0.0
    assert cer("明日の天気はどうなりますか。", "明日の天気は どうなりますか?") == 0.0
    assert cer("今天天气怎么样？", "今天天氣怎麼樣") == 3 / 7  # the script counts: 气/氣, 么/麼, 样/樣
    assert cer("ＡＢＣ１２３", "abc123") == 0.0
