"""`koe bench latency` end to end, against a koe on loopback: three real-time turns, the second one interrupted."""

from __future__ import annotations

from koe.bench.latency import bench_latency
from koe.config import load_settings
from koe.engines.registry import Engines
from tests.server.acs.support import koe_server


async def test_latency_bench_reports_every_turn_its_parts_and_a_barge_in(engines: Engines) -> None:
    settings = load_settings(overrides={"llm": {"temperature": 0.0}})
    progress: list[str] = []
    async with koe_server(settings, engines) as (base, _app):
        result = await bench_latency(settings, base.replace("http://", "ws://"), 3, progress.append)
    assert result["response_latency_ms"]["n"] == 3, result["turns"]
    assert 0 < result["response_latency_ms"]["p50"] < 10_000
    for part in ("turn_end_ms", "stt_ms", "llm_first_token_ms", "tts_first_audio_ms", "total_ms"):
        assert result["breakdown_ms"][part]["n"] == 3, part
    assert result["barge_in_latency_ms"]["n"] == 1
    assert [turn["barge_in_ms"] is not None for turn in result["turns"]] == [False, True, False]
    assert len(progress) >= 3
