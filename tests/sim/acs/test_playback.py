"""koe.sim.acs.playback: the real-time playout queue, StopAudio flushes, the recording and barge-in timing."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from koe.sim.acs.playback import Playout

RATE = 16000


def _ms(ms: int, value: int = 1000) -> bytes:
    return np.full(RATE * ms // 1000, value, dtype="<i2").tobytes()


def test_audio_plays_out_in_real_time() -> None:
    playout = Playout(RATE)
    playout.enqueue(_ms(1000), 0)
    playout.advance(400)
    assert round(playout.queued_ms) == 600
    playout.advance(1500)
    assert playout.queued_ms == 0
    played = playout.played()
    assert played.size == RATE
    assert playout.stats()["played_ms"] == 1000


def test_stop_audio_flushes_what_is_queued_and_is_not_sticky() -> None:
    playout = Playout(RATE)
    playout.enqueue(_ms(1000), 0)
    flush = playout.stop(300)
    assert flush.was_playing
    assert round(flush.dropped_ms) == 700
    playout.enqueue(_ms(200, 5), 500)
    playout.advance(1000)
    played = playout.played()
    assert played[RATE * 550 // 1000] == 5, "audio after StopAudio plays again"
    assert playout.stats()["flushed_ms"] == 700


def test_barge_in_pairs_each_flush_with_the_onset_before_it(tmp_path: Path) -> None:
    playout = Playout(RATE)
    playout.enqueue(_ms(2000), 100)
    playout.add_inbound(np.full(RATE, 7, dtype=np.int16), 0)
    playout.stop(1300)
    (barge,) = playout.barge_ins([(0, "4:+1"), (1000, "4:+2"), (5000, "4:+3")])
    assert barge.participant_raw_id == "4:+2"
    assert barge.latency_ms == 300
    assert round(barge.dropped_ms) == 800
    playout.write_recording(tmp_path / "call.wav")
    with wave.open(str(tmp_path / "call.wav")) as wav:
        assert wav.getnchannels() == 2
        frames = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, 2)
    assert frames[10, 0] == 7
    assert frames[RATE // 2, 1] == 1000


def test_underrun_is_audio_arriving_just_after_the_queue_ran_dry() -> None:
    playout = Playout(RATE)
    playout.enqueue(_ms(100), 0)
    playout.enqueue(_ms(100), 150)
    playout.enqueue(_ms(100), 2000)
    assert playout.underruns == 1
