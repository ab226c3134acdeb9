"""The parser half of `koe bench fuzz`: `fuzz_parsers(inputs, names, seed)` runs `inputs` mutated inputs through each
target of `koe.bench.fuzz.targets` and reports, per target, how many were accepted, how many rejected by which typed
protocol error, and every crash (any other exception), with the first few crashing inputs kept (base64) so each can
be replayed from bytes alone. 0 crashes is the pass mark.
"""

from __future__ import annotations

import base64
import random
import time
import traceback
from collections import Counter
from collections.abc import Callable
from typing import Any

from koe.bench.fuzz._mutate import Mutator
from koe.bench.fuzz.targets import Target, targets

KEPT_CRASHES = 5
"""Crashing inputs kept per target (the count covers them all)."""
SLOW_INPUT_S = 1.0
"""One input taking this long is reported as slow (a parser that loops or backtracks)."""
PROGRESS_EVERY = 100_000


def fuzz_parsers(
    inputs: int,
    names: list[str] | None = None,
    seed: int = 14,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    chosen = [t for t in targets() if names is None or t.name in names]
    if names is not None and len(chosen) != len(names):
        known = ", ".join(t.name for t in targets())
        raise ValueError(f"unknown fuzz target in {names}; the targets are: {known}")
    report: dict[str, Any] = {}
    for index, target in enumerate(chosen):
        report[target.name] = fuzz_target(target, inputs, random.Random(seed * 1000 + index), progress)
        if progress is not None:
            row = report[target.name]
            progress(
                f"{target.name}: {row['inputs']} inputs, {row['accepted']} accepted, {row['crashes']} crashes, "
                f"{row['inputs_per_s']:.0f}/s"
            )
    return report


def fuzz_target(
    target: Target, inputs: int, rng: random.Random, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    mutator = Mutator(target.seeds, rng)
    accepted = 0
    rejected: Counter[str] = Counter()
    crashes: Counter[str] = Counter()
    kept: list[dict[str, str]] = []
    slow: list[dict[str, Any]] = []
    longest_s = 0.0
    started = time.perf_counter()
    for count in range(1, inputs + 1):
        data = mutator.next()
        if target.fix is not None:
            data = target.fix(data, rng)
        begun = time.perf_counter()
        try:
            target.feed(data)
        except target.rejects as exc:
            rejected[type(exc).__name__] += 1
        except Exception as exc:  # a crash: the point of the exercise is to find these
            key = f"{type(exc).__name__}: {str(exc)[:120]}"
            crashes[key] += 1
            if len(kept) < KEPT_CRASHES:
                kept.append(
                    {
                        "error": key,
                        "input_b64": base64.b64encode(data).decode(),
                        "where": "".join(traceback.format_tb(exc.__traceback__)[-2:])[-600:],
                    }
                )
        else:
            accepted += 1
        took = time.perf_counter() - begun
        longest_s = max(longest_s, took)
        if took >= SLOW_INPUT_S and len(slow) < KEPT_CRASHES:
            slow.append({"seconds": round(took, 3), "input_b64": base64.b64encode(data).decode()})
        if progress is not None and count % PROGRESS_EVERY == 0:
            progress(f"{target.name}: {count} of {inputs}")
    elapsed = time.perf_counter() - started
    return {
        "inputs": inputs,
        "accepted": accepted,
        "rejected": dict(sorted(rejected.items())),
        "crashes": sum(crashes.values()),
        "crash_kinds": dict(crashes),
        "crash_samples": kept,
        "slow_inputs": slow,
        "longest_input_ms": round(longest_s * 1000, 3),
        "seconds": round(elapsed, 2),
        "inputs_per_s": inputs / elapsed if elapsed else 0.0,
        "typed_rejections": [error.__name__ for error in target.rejects],
        **({"notes": target.notes} if target.notes else {}),
    }
