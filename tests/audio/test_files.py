"""Reading audio files of any kind PyAV decodes as mono PCM16 at a chosen rate, and writing WAV."""

from __future__ import annotations

import io
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from koe.audio.files import read_audio, wav_bytes, write_wav
from koe.audio.pcm import AudioFormatError, Pcm


def test_espeak_wav_with_placeholder_sizes_reads_only_the_real_data(audio_dir: Path) -> None:
    pcm = read_audio(audio_dir / "reply_espeak_22k.wav", 22050)
    assert pcm.size == 109_253  # not the 1,073,739,776 frames the header claims
    assert np.abs(pcm).max() > 1000


def test_ogg_opus_fixture_decodes_to_its_length_after_pre_skip(audio_dir: Path) -> None:
    assert read_audio(audio_dir / "reply_48k_opus.ogg", 48000).size == 211_200
    data = (audio_dir / "reply_48k_opus.ogg").read_bytes()
    assert abs(read_audio(data, 16000).size - 70_400) <= 1
    assert abs(read_audio(io.BytesIO(data), 24000).size - 105_600) <= 1


def test_wav_fixture_is_resampled_on_read(audio_dir: Path, wav: Callable[[str], tuple[Pcm, int]]) -> None:
    native, rate = wav("short_22k.wav")
    assert rate == 22050
    assert np.array_equal(read_audio(audio_dir / "short_22k.wav", 22050), native)
    assert abs(read_audio(str(audio_dir / "short_22k.wav"), 16000).size - 46_068) <= 2


def test_stereo_is_downmixed(tmp_path: Path) -> None:
    left = np.full(1600, 2000, dtype=np.int16)
    stereo = np.stack([left, -left // 2], axis=1)
    path = tmp_path / "stereo.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(stereo.astype("<i2").tobytes())
    mono = read_audio(path, 16000)
    assert mono.size == 1600
    assert abs(int(np.median(mono)) - 500) <= 1


@pytest.mark.parametrize(
    "data", [b"garbage" * 100, b"", b"RIFF\x00\x00", b"OggS" + bytes(60)], ids=["text", "empty", "riff", "ogg"]
)
def test_garbage_is_an_audio_format_error(data: bytes) -> None:
    with pytest.raises(AudioFormatError, match="cannot decode uploaded audio"):
        read_audio(data, 16000)


def test_non_audio_file_and_missing_file(audio_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(AudioFormatError, match=r"README\.md"):
        read_audio(audio_dir / "README.md", 16000)
    with pytest.raises(AudioFormatError, match=r"nope\.wav"):
        read_audio(tmp_path / "nope.wav", 16000)
    with pytest.raises(AudioFormatError, match="unsupported sample rate"):
        read_audio(audio_dir / "short_16k.wav", 44100)


def test_write_wav_round_trip(tmp_path: Path) -> None:
    pcm = np.arange(-500, 500, dtype=np.int16)
    write_wav(tmp_path / "out.wav", pcm, 24000)
    with wave.open(str(tmp_path / "out.wav")) as handle:
        assert (handle.getnchannels(), handle.getsampwidth(), handle.getframerate()) == (1, 2, 24000)
        assert np.array_equal(np.frombuffer(handle.readframes(1000), dtype="<i2"), pcm)
    assert np.array_equal(read_audio(wav_bytes(pcm, 24000), 24000), pcm)
