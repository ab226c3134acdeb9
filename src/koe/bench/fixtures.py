"""Where the benchmarks find their audio: the shared fixtures beside the repository (`../shared/fixtures/audio`)."""

from __future__ import annotations

from pathlib import Path

AUDIO = Path(__file__).resolve().parents[3].parent / "shared" / "fixtures" / "audio"
