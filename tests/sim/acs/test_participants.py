"""koe.sim.acs.participants: call audio cut into ACS frames, mixed and unmixed, with each silence policy."""

from __future__ import annotations

import numpy as np
import pytest

from koe.sim.acs.participants import (
    MAX_UNMIXED_CHANNELS,
    CallAudio,
    Participant,
    acs_raw_id,
    phone_raw_id,
)
from tests.conftest import load_wav


def _tone(ms: int, rate: int = 16000, amplitude: int = 8000) -> np.ndarray:
    t = np.arange(rate * ms // 1000) / rate
    return (np.sin(2 * np.pi * 440 * t) * amplitude).astype(np.int16)


def test_raw_ids_look_real() -> None:
    assert phone_raw_id(7) == "4:+15550100007"
    assert acs_raw_id("3d20e1de-0f28-41c5-84a0-4960fde5f411").startswith("8:acs:3d20e1de-0f28-41c5-84a0-4960fde5f411_")


def test_mixed_is_one_frame_per_tick_without_participant() -> None:
    pcm, rate = load_wav("short_16k.wav")
    audio = CallAudio([Participant(phone_raw_id(1), pcm), Participant(phone_raw_id(2), pcm, 500)], rate)
    assert audio.ticks == -(-(pcm.size + 8000) // 320)
    frames = [audio.frames(tick) for tick in range(audio.ticks)]
    assert all(len(f) == 1 and f[0].participant_raw_id is None and len(f[0].pcm) == 640 for f in frames)
    assert any(f[0].silent for f in frames)
    assert not all(f[0].silent for f in frames)
    joined = np.frombuffer(b"".join(f[0].pcm for f in frames), dtype=np.int16)
    assert np.abs(joined).max() > 1000


def test_unmixed_gives_each_speaker_a_channel_and_suppress_drops_silence() -> None:
    rate = 16000
    people = [Participant(phone_raw_id(n), _tone(200), start_ms=n * 400) for n in range(3)]
    audio = CallAudio(people, rate, mixed=False)
    first = audio.frames(0)
    assert [f.participant_raw_id for f in first] == [p.raw_id for p in people]
    assert [f.silent for f in first] == [False, True, True]
    assert all(len(f.pcm) == 640 for f in first)
    quiet = CallAudio(people, rate, mixed=False, silence="suppress")
    assert [f.participant_raw_id for f in quiet.frames(0)] == [people[0].raw_id]
    assert [f.participant_raw_id for f in quiet.frames(25)] == [people[1].raw_id]
    empty = CallAudio(people, rate, mixed=False, silence="empty")
    assert [len(f.pcm) for f in empty.frames(0)] == [640, 0, 0]


def test_unmixed_caps_channels_at_four_and_follows_the_speakers() -> None:
    people = [Participant(phone_raw_id(n), _tone(100), start_ms=n * 200) for n in range(6)]
    audio = CallAudio(people, 16000, mixed=False)
    seen = []
    for tick in range(audio.ticks):
        channels = [f.participant_raw_id for f in audio.frames(tick)]
        assert len(channels) <= MAX_UNMIXED_CHANNELS
        seen.append(channels)
    assert people[5].raw_id in seen[-1]
    assert people[0].raw_id not in seen[-1]


def test_24k_frames_are_960_bytes_and_onsets_are_found() -> None:
    people = [Participant(phone_raw_id(1), _tone(300, 24000)), Participant(phone_raw_id(2), _tone(300, 24000), 1000)]
    audio = CallAudio(people, 24000, mixed=False, tail_ms=100)
    assert len(audio.frames(0)[0].pcm) == 960
    assert audio.speech_onsets_ms() == [(0, people[0].raw_id), (1000, people[1].raw_id)]
    assert audio.duration_ms == 1400


def test_a_call_needs_someone() -> None:
    with pytest.raises(ValueError, match="at least one"):
        CallAudio([], 16000)
