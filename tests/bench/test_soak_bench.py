"""`koe bench soak` end to end at a tiny size: 48 short sessions across the four doors, then a 15 s soak on one Sora
transcription stream. Checks the JSON's shape and that its figures were measured (sessions counted on every door,
samples taken, finals timed, a PNG drawn), never thresholds on speed or memory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from koe.cli import main

pytestmark = [pytest.mark.models, pytest.mark.slow, pytest.mark.timeout(240)]
SESSIONS = 48


def test_soak_bench_counts_every_doors_sessions_samples_the_server_and_draws_the_soak(tmp_path: Path) -> None:
    out, plot = tmp_path / "soak.json", tmp_path / "soak.png"
    arguments = [
        "bench", "soak", "--sessions", str(SESSIONS), "--concurrency", "4", "--samples", "4",
        "--duration", "15", "--streams", "1", "--windows", "2", "--out", str(out), "--plot", str(plot),
    ]  # fmt: skip
    run = CliRunner().invoke(main, arguments, catch_exceptions=False)
    assert run.exit_code == 0, run.output
    result = json.loads(out.read_text())
    assert set(result) == {"date", "leak", "soak", "machine"}

    leak = result["leak"]
    assert leak["sessions"] == SESSIONS
    assert leak["sessions_completed"] == dict.fromkeys(("realtime", "acs", "sora", "rest"), SESSIONS // 4)
    assert sum(leak["errors"].values()) == 0, leak["first_errors"]
    assert leak["samples"] and leak["samples"][-1]["sessions"] == SESSIONS
    for figure in ("rss_mb", "open_fds", "asyncio_tasks"):
        assert leak[figure]["after_warmup"] > 0 and leak[figure]["end"] > 0, figure
        assert isinstance(leak[figure]["flat_within_5pct"], bool), figure
    assert leak["sessions_active_at_end"] == {"realtime": 0, "acs": 0, "sora": 0}

    soak = result["soak"]
    assert soak["streams"] == 1 and soak["duration_s"] == 15
    assert soak["final_results"] > 0 and soak["latency_p95_s"] is not None
    assert len(soak["per_window"]) == 2
    assert sum(row["final_results"] for row in soak["per_window"]) == soak["final_results"]
    assert len(soak["rss_samples"]) >= 3 and all(mb > 0 for _, mb in soak["rss_samples"])
    assert soak["rss"]["first"] is not None and "flat_within_10pct" in soak["latency_p95"]
    assert plot.read_bytes().startswith(b"\x89PNG")
    assert result["machine"]["cpus"] and result["machine"]["note"]
