"""`koe bench fuzz`: the command, its flags, and the results file (bench/results/fuzz.json)."""

from __future__ import annotations

import asyncio
import json
import platform
import time
from pathlib import Path
from typing import Any

import click

from koe.bench.fuzz.parsers import fuzz_parsers
from koe.bench.fuzz.targets import targets


def _say(message: str) -> None:
    click.echo(f"koe: {message}", err=True)


@click.command("fuzz")
@click.option("--inputs", type=int, default=1_000_000, show_default=True, help="Inputs per parser.")
@click.option("--targets", "names", default="", help="Comma-separated parsers (default: all; --list names them).")
@click.option("--door-inputs", type=int, default=2000, show_default=True, help="Inputs per running door (0: none).")
@click.option("--doors", "door_names", default="", help="Comma-separated doors (default: all of them).")
@click.option("--seed", type=int, default=14, show_default=True, help="The mutations' seed: a run can be repeated.")
@click.option("--list", "list_only", is_flag=True, help="Name the parsers and exit.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("bench/results/fuzz.json"))
def bench_fuzz(
    inputs: int, names: str, door_inputs: int, door_names: str, seed: int, list_only: bool, out: Path
) -> None:
    """Mutated real messages through every sans-I/O parser, then through the running doors with a healthy call
    beside them. Exits 1 if anything crashed."""
    if list_only:
        from koe.bench.fuzz.doors import DOORS

        for target in targets():
            click.echo(target.name)
        click.echo("doors: " + ", ".join(DOORS))
        return
    wanted = [name.strip() for name in names.split(",") if name.strip()] or None
    started = time.time()
    try:
        parsers = fuzz_parsers(inputs, wanted, seed, progress=_say) if inputs > 0 else {}
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    result: dict[str, Any] = {
        "command": f"koe bench fuzz --inputs {inputs} --door-inputs {door_inputs} --seed {seed}"
        + (f" --targets {names}" if wanted else ""),
        "machine": {"python": platform.python_version(), "cpus": _cpus()},
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "parsers": parsers,
        "parser_crashes": sum(row["crashes"] for row in parsers.values()),
    }
    if door_inputs > 0:
        from koe.bench.fuzz.doors import fuzz_doors

        doors = [name.strip() for name in door_names.split(",") if name.strip()] or None
        result["doors"] = asyncio.run(fuzz_doors(door_inputs, seed, progress=_say, names=doors))
        result["door_findings"] = sum(row["findings"] for row in result["doors"]["doors"].values())
    result["seconds"] = round(time.time() - started, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    _say(f"wrote {out}")
    if result["parser_crashes"] or result.get("door_findings"):
        raise SystemExit(1)


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
