"""The `koe bench soak` click command: the leak check, then the soak; JSON and a PNG under bench/results/."""

from __future__ import annotations

import datetime
import json
import os
import platform
from pathlib import Path
from typing import Any

import click

from koe.bench.soak.leak import run_leak
from koe.bench.soak.plot import write_plot
from koe.bench.soak.soak import default_streams, run_soak

SORA_RESULTS = Path("bench/results/sora.json")
SHARED_MACHINE = "a 2-core machine shared with other developers' builds and tests: latencies include their load"


def _machine(load_before: tuple[float, float, float], note: str) -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "note": note,
    }


@click.command("soak")
@click.option("--sessions", type=int, default=10_000, show_default=True, help="Short sessions of the leak check.")
@click.option("--concurrency", type=int, default=8, show_default=True, help="Leak-check sessions at once.")
@click.option("--samples", type=int, default=20, show_default=True, help="Leak-check batches, each sampled.")
@click.option("--duration", type=float, default=3600.0, show_default=True, help="Soak length in seconds.")
@click.option(
    "--streams", type=int, default=None, help=f"Soak streams at once (default: the capacity in {SORA_RESULTS})."
)
@click.option("--windows", type=int, default=12, show_default=True, help="Time windows the soak is cut into.")
@click.option("--skip-leak", is_flag=True)
@click.option("--skip-soak", is_flag=True)
@click.option("--note", default=SHARED_MACHINE, show_default=True, help="What else the machine was doing.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("bench/results/soak.json"))
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), default=Path("bench/results/soak.png"))
def bench_soak(
    sessions: int,
    concurrency: int,
    samples: int,
    duration: float,
    streams: int | None,
    windows: int,
    skip_leak: bool,
    skip_soak: bool,
    note: str,
    out: Path,
    plot: Path,
) -> None:
    """Leaks over many short sessions on every door, and a long soak of Sora transcription at capacity."""

    def say(message: str) -> None:
        click.echo(message, err=True)

    load_before = os.getloadavg()
    result: dict[str, Any] = {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
    if not skip_leak:
        result["leak"] = run_leak(sessions, concurrency, say, samples=samples)
    if not skip_soak:
        chosen = streams if streams is not None else default_streams(SORA_RESULTS)
        result["soak"] = run_soak(duration, chosen, windows, say)
        result["soak"]["plot"] = str(write_plot(result["soak"], plot))
    result["machine"] = _machine(load_before, note)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2)
    out.write_text(text + "\n", encoding="utf-8")
    click.echo(json.dumps({k: v for k, v in result.items() if k != "soak"} | {"soak": _summary(result)}, indent=2))
    say(f"wrote {out}")


def _summary(result: dict[str, Any]) -> dict[str, Any] | None:
    soak = result.get("soak")
    if soak is None:
        return None
    return {key: value for key, value in soak.items() if key not in ("per_window", "rss_samples")}
