"""The engines package's OpenMP default (`koe.engines`): short spins, so two OpenMP runtimes share two cores."""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = "import koe.engines, os; print(os.environ['GOMP_SPINCOUNT'])"


def _spin_count(env: dict[str, str]) -> str:
    result = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return result.stdout.strip()


def test_the_engines_set_a_short_openmp_spin_before_any_backend_loads() -> None:
    env = {key: value for key, value in os.environ.items() if key != "GOMP_SPINCOUNT"}
    assert _spin_count(env) == "10000"
    assert "ctranslate2" not in sys.modules or os.environ.get("GOMP_SPINCOUNT") == "10000"


def test_a_spin_count_from_the_environment_wins() -> None:
    assert _spin_count({**os.environ, "GOMP_SPINCOUNT": "5"}) == "5"
