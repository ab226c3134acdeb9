"""The soak's picture: p95 (and p50) final-result latency per window, and the server's RSS, over time.

`write_plot(result, path)` draws the `soak` part of a `koe bench soak` result to a PNG (matplotlib, headless).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write_plot(soak: dict[str, Any], path: Path, title: str = "koe bench soak") -> Path:
    import matplotlib

    matplotlib.use("Agg")  # no display: a file only
    import matplotlib.pyplot as plt

    rows = soak["per_window"]
    middles = [(row["start_s"] + row["end_s"]) / 2 / 60 for row in rows]
    figure, (latency, memory) = plt.subplots(2, 1, sharex=True, figsize=(9, 6), constrained_layout=True)
    for key, label, style in (("latency_p95_s", "p95", "o-"), ("latency_p50_s", "p50", "s--")):
        points = [(x, row[key] * 1000) for x, row in zip(middles, rows, strict=True) if row[key] is not None]
        latency.plot([x for x, _ in points], [y for _, y in points], style, label=label)
    latency.set_ylabel("final-result latency (ms)")
    latency.set_ylim(bottom=0)
    latency.legend()
    latency.grid(alpha=0.3)
    latency.set_title(f"{title}: {soak['streams']} Sora transcription streams, {soak['duration_s']:.0f} s")
    samples = soak["rss_samples"]
    memory.plot([at / 60 for at, _ in samples], [mb for _, mb in samples], "-", color="tab:red")
    memory.set_ylabel("server RSS (MiB)")
    memory.set_xlabel("time (min)")
    memory.grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
