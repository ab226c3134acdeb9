"""A smoke run of the cheap parts of `koe bench engines`: the machine record and the per-frame DSP figures."""

from __future__ import annotations

from collections.abc import Callable

from koe.audio.pcm import Pcm
from koe.bench import engines as bench


def test_machine_record() -> None:
    info = bench.machine_info()
    assert info["cpu_model"]
    assert info["cores"] >= 1
    assert info["ram_gb"] > 0
    assert info["libraries"]["faster-whisper"]
    assert info["python"].startswith("3.")


def test_dsp_figures_are_positive(wav: Callable[[str], tuple[Pcm, int]]) -> None:
    speech48, _ = wav("short_48k.wav")
    speech16, _ = wav("short_16k.wav")
    opus = bench._bench_opus(speech48, 1)
    assert opus["encode_us_per_frame"] > 0
    assert opus["decode_us_per_frame_16k"] > 0
    assert 20 < opus["mean_packet_bytes"] < 200
    assert bench._bench_denoise(speech48, 1)["us_per_frame_16k"] > 0
    assert bench._bench_echo(speech16, 1)["us_per_frame_16k"] > 0
