"""The playback clock, on an injected clock: what was heard, what was dropped, what the speaker plays; and a hold,
on the real one."""

from __future__ import annotations

import asyncio

import numpy as np

from koe.voice.playback import MAX_HOLD_MS, PlaybackClock


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_audio_plays_in_real_time_from_the_first_chunk() -> None:
    clock = _Clock()
    playback = PlaybackClock(clock)
    for _ in range(10):  # 2 s of audio, sent at once
        playback.sent("r", "i", np.zeros(4800, dtype=np.int16), 24000)
    assert playback.is_playing() and playback.pending_ms() == 2000
    clock.now += 0.5
    assert playback.played_ms("i") == 500
    response_id, item_id, played, dropped = playback.interrupt()
    assert (response_id, item_id, played, dropped) == ("r", "i", 500, 1500)
    assert not playback.is_playing()


def test_an_underrun_leaves_a_gap() -> None:
    clock = _Clock()
    playback = PlaybackClock(clock)
    playback.sent("r", "i", np.zeros(2400, dtype=np.int16), 24000)  # 100 ms
    clock.now += 0.3  # nothing arrived for 200 ms after it finished
    playback.sent("r", "i", np.zeros(2400, dtype=np.int16), 24000)
    clock.now += 0.05
    assert playback.played_ms("i") == 150
    assert playback.sent_ms("i") == 200


def test_far_end_is_what_plays_now_at_16k() -> None:
    clock = _Clock()
    playback = PlaybackClock(clock, keep_reference=True)
    tone = (np.sin(np.arange(24000) * 2 * np.pi * 440 / 24000) * 8000).astype(np.int16)
    playback.sent("r", "i", tone, 24000)
    clock.now += 0.5
    reference = playback.far_end(1600)  # the last 100 ms
    assert reference.size == 1600 and np.abs(reference).max() > 4000
    clock.now += 1.0  # long after it finished
    assert not playback.far_end(1600).any()


async def test_a_hold_ends_by_itself_after_max_hold() -> None:
    """A speaker whose audio stopped with an onset pending never releases the hold: it ends on its own."""
    playback = PlaybackClock()
    playback.sent("resp_1", "item_1", np.zeros(24000 * 2, np.int16), 24000)  # 2 s to play
    playback.hold()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await playback.wait_room(100, lead_ms=3000)
    waited_ms = (loop.time() - started) * 1000
    assert MAX_HOLD_MS - 20 <= waited_ms < MAX_HOLD_MS + 300, waited_ms
    playback.resume()
    started = loop.time()
    await playback.wait_room(100, lead_ms=3000)
    assert loop.time() - started < 0.05
