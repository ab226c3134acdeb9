"""`koe bench latency` end to end, against a koe on loopback: three real-time turns per configuration (server and
semantic VAD, one silence window here), the second one interrupted, each run with its per-stage waterfall; then the
same three turns on an ACS call in agent mode."""

from __future__ import annotations

from koe.bench.latency import STAGES, bench_latency
from koe.config import load_settings
from koe.engines.registry import Engines
from tests.server.acs.support import koe_server


async def test_latency_bench_reports_every_turn_its_parts_and_a_barge_in(engines: Engines) -> None:
    settings = load_settings(overrides={"llm": {"temperature": 0.0}})
    progress: list[str] = []
    async with koe_server(settings, engines) as (base, _app):
        url = base.replace("http://", "ws://")
        result = await bench_latency(settings, url, 3, progress.append, silences_ms=(200,), eagerness="high")
    assert [(run["door"], run["silence_duration_ms"]) for run in result["runs"]] == [
        ("voice-live", 200),
        ("voice-live", 200),
        ("acs", settings.acs.silence_duration_ms),
    ]
    *realtime, acs = result["runs"]
    assert [run["turn_detection"] for run in realtime] == ["server_vad", "semantic_vad"]
    for run in result["runs"]:
        assert run["response_latency_ms"]["n"] == 3, run["turns"]
        assert 0 < run["response_latency_ms"]["p50"] < 10_000
        # The second turn is spoken over; a reply already sent in full by then is reported so, not as 0 ms.
        barged = [turn["barge_in_ms"] is not None or bool(turn["reply_sent_before_onset"]) for turn in run["turns"]]
        assert barged == [False, True, False]
        assert run["barge_in_latency_ms"]["n"] + run["barge_ins_with_nothing_left_to_stop"] == 1
    for run in realtime:
        assert run["response_latency_ms"]["n"] == 3, run["turns"]
        assert 0 < run["response_latency_ms"]["p50"] < 10_000
        for part in (*STAGES, "client_extra_ms"):
            # endpoint_ms belongs to a reply a speculation started; one started at the commit has turn_end_ms
            assert run["waterfall_ms"][part]["n"] == 3 or part == "endpoint_ms", part
        for turn in run["turns"]:
            parts = turn["breakdown"]
            start = parts["endpoint_ms"] if parts["endpoint_ms"] is not None else parts["turn_end_ms"]
            chain = [start] + [parts[p] for p in STAGES if p not in ("turn_end_ms", "endpoint_ms", "total_ms")]
            assert abs(sum(chain) - parts["total_ms"]) <= len(chain), parts  # every millisecond accounted for
    assert acs["mode"] == "agent" and "waterfall_ms" not in acs  # ACS carries no per-stage report
    assert len(progress) >= 9
