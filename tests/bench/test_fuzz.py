"""The smoke run of `koe bench fuzz` (issue 14, must-hold 1): every parser takes a few hundred mutated inputs and
Hypothesis's own inputs with 0 crashes, every rejection one of its typed protocol errors; then the running doors take
a few batches while a healthy call streams beside them, undisturbed, and `/healthz` answers after every batch. The
full run (a million inputs per parser) is `koe bench fuzz`, for the lead's quiet window."""

from __future__ import annotations

import contextlib
import random
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from koe.bench.fuzz.cli import bench_fuzz
from koe.bench.fuzz.doors import fuzz_doors
from koe.bench.fuzz.parsers import fuzz_parsers, fuzz_target
from koe.bench.fuzz.targets import Target, targets

SMOKE_INPUTS = 300
TARGETS = {target.name: target for target in targets()}
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=12), inner, max_size=6),
    max_leaves=30,
)
KEYS = st.sampled_from(["type", "kind", "session", "item", "audio", "event_id", "audioData", "data", "response"])


def test_every_parser_takes_mutated_inputs_without_a_crash() -> None:
    report = fuzz_parsers(SMOKE_INPUTS, seed=random.randrange(1 << 30))
    assert set(report) == set(TARGETS)
    for name, row in report.items():
        assert row["crashes"] == 0, (name, row["crash_kinds"], row["crash_samples"][:1])
        assert row["inputs"] == SMOKE_INPUTS
        assert row["accepted"] + sum(row["rejected"].values()) == SMOKE_INPUTS
        assert set(row["rejected"]) <= _error_names(TARGETS[name]), name


def _error_names(target: Target) -> set[str]:
    """The typed errors a target may reject with, subclasses included."""
    names: set[str] = set()
    pending = list(target.rejects)
    while pending:
        error = pending.pop()
        names.add(error.__name__)
        pending += error.__subclasses__()
    return names


def _rejects_or_accepts(target: Target, data: bytes) -> None:
    with contextlib.suppress(*target.rejects):
        target.feed(data)


@pytest.mark.parametrize("name", sorted(set(TARGETS) - {"config_toml"}))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=2048))
def test_hypothesis_bytes(name: str, data: bytes) -> None:
    _rejects_or_accepts(TARGETS[name], data)


@pytest.mark.parametrize(
    "name",
    [n for n in sorted(TARGETS) if n.startswith(("realtime", "acs"))],
)
@settings(max_examples=150, deadline=None)
@given(extra=st.dictionaries(KEYS, JSON, max_size=4), seed=st.integers(0, 10_000))
def test_hypothesis_json_on_a_real_message(name: str, extra: dict[str, object], seed: int) -> None:
    """A real message with Hypothesis's values put in at its top level: gets past the JSON decoder every time."""
    target = TARGETS[name]
    base = orjson.loads(random.Random(seed).choice(target.seeds))
    message = {**base, **extra} if isinstance(base, dict) else extra
    _rejects_or_accepts(target, orjson.dumps(message))


def test_a_crash_is_reported_with_its_input() -> None:
    def fragile(data: bytes) -> None:
        if data.startswith(b"{"):
            raise KeyError("boom")

    row = fuzz_target(Target("fragile", [b'{"a": 1}', b"x"], fragile, (ValueError,)), 200, random.Random(1))
    assert row["crashes"] > 0
    assert row["crash_samples"][0]["error"].startswith("KeyError")
    assert row["crash_samples"][0]["input_b64"]


async def test_the_running_doors_take_fuzzed_input_with_a_healthy_call_beside_them() -> None:
    doors = ["realtime_ws", "acs_ws", "websocket_frames", "sora_h2_bodies", "sora_h2_headers"]
    report = await fuzz_doors(40, seed=random.randrange(1 << 30), names=doors)
    assert set(report["doors"]) == set(doors)
    for name, row in report["doors"].items():
        assert row["findings"] == 0, (name, row)
        assert row["healthz_failures"] == 0
    healthy = report["healthy_call"]
    assert healthy["closed_during_fuzzing"] is None
    assert healthy["echoes"] >= healthy["frames_sent"] * 0.9
    assert not report["server_exited"]


def test_the_command_writes_its_results(tmp_path: Path) -> None:
    out = f"{tmp_path}/fuzz.json"
    result = CliRunner().invoke(
        bench_fuzz, ["--inputs", "50", "--targets", "acs_inbound,opus_packets", "--door-inputs", "0", "--out", out]
    )
    assert result.exit_code == 0, result.output
    written = orjson.loads(Path(out).read_bytes())
    assert set(written["parsers"]) == {"acs_inbound", "opus_packets"}
    assert written["parser_crashes"] == 0
    unknown = CliRunner().invoke(bench_fuzz, ["--inputs", "5", "--targets", "nope", "--door-inputs", "0"])
    assert unknown.exit_code == 2 and "the targets are" in unknown.output
