"""Where the benchmarks find their audio: the shared fixtures beside the repository (`../shared/fixtures/audio`), and
the Japanese and Chinese clips in the repository's own tests (`tests/fixtures/audio`)."""

from __future__ import annotations

from pathlib import Path

AUDIO = Path(__file__).resolve().parents[3].parent / "shared" / "fixtures" / "audio"
LANGUAGE_AUDIO = Path(__file__).resolve().parents[3] / "tests" / "fixtures" / "audio"
