"""A smoke run of `koe bench soak`: short sessions on every door against koe in a child process, none failing, the
server up and answering `/healthz` throughout, and its memory and descriptors sampled. Whether they stay flat over
10,000 sessions is the benchmark's to say (bench/results/soak.json), not a timed test's."""

from __future__ import annotations

from pathlib import Path

from koe.bench.soak import plot, run_soak


async def test_short_sessions_on_every_door_leave_koe_serving(tmp_path: Path) -> None:
    result = await run_soak(sessions=120, duration_s=None, concurrency=6)
    assert result["sessions"] == 120
    assert result["failed_sessions"] == 0
    assert result["healthz_failures"] == 0
    assert not result["server_exited"]
    assert len(result["samples"]) >= 3
    assert all(sample["rss_mb"] > 0 and sample["fds"] > 0 for sample in result["samples"])
    assert plot(result, tmp_path / "soak.png")
    assert (tmp_path / "soak.png").stat().st_size > 0
