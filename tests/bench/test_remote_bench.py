"""A smoke run of `koe bench remote`: a model node and a door node in child processes, one timed round, and the
figures each way reports. How large the hop is belongs to the benchmark's own runs, not here."""

from __future__ import annotations

import pytest

from koe.bench.remote import WAYS, run_remote_bench
from koe.config import Settings


@pytest.mark.models
def test_one_round_reports_every_way_and_both_nodes_memory() -> None:
    said: list[str] = []
    result = run_remote_bench(Settings(), runs=1, progress=said.append)
    assert result["runs"] == 1 and any("warm-up" in line for line in said)
    stt, tts = result["stt"], result["tts"]
    assert set(stt["transcription_ms"]) == set(WAYS) and stt["n"] == 3
    assert all(value > 0 for value in stt["transcription_ms"].values())
    assert set(stt["transcription_ms_added"]) == {"remote", "door"}
    for way in WAYS:
        assert 0 < tts["first_audio_ms"][way] <= tts["last_audio_ms"][way]
    memory = result["memory_mb"]
    assert 0 < memory["door_node"] < memory["model_node"]  # the door node holds no Whisper or Piper
