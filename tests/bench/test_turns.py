"""The bench caller's loudspeaker and microphone (`koe.bench._turns`): the reply's echo in the input."""

from __future__ import annotations

import numpy as np

from koe.bench._turns import Loudspeaker

RATE = 16000


def test_the_echo_is_the_played_audio_through_the_taps() -> None:
    speaker = Loudspeaker(RATE, taps=((0.010, -6.0),))
    at = speaker._epoch + 1.0
    tone = (np.arange(RATE // 10) % 50 * 100).astype("<i2")  # 100 ms that played from `at`
    speaker.play(tone.tobytes(), at)
    echo = speaker.echo(at + 0.110, RATE // 10)  # the 100 ms from 10 ms in: the whole tone, 10 ms late
    assert np.allclose(echo, tone * 10 ** (-6 / 20), atol=1.0)
    assert not speaker.echo(at + 0.010, RATE // 100).any()  # the first 10 ms: the echo has not arrived


def test_audio_plays_after_what_is_playing_and_stops_at_a_flush() -> None:
    speaker = Loudspeaker(RATE, taps=((0.0, 0.0),))
    at = speaker._epoch + 1.0
    chunk = np.full(RATE // 10, 1000, "<i2").tobytes()
    speaker.play(chunk, at)
    speaker.play(chunk, at + 0.01)  # arrives while the first plays: it follows it, with no gap
    assert np.allclose(speaker.echo(at + 0.2, RATE // 5), 1000.0)
    speaker.flush(at + 0.15)
    assert not speaker.echo(at + 0.2, RATE // 20).any()
