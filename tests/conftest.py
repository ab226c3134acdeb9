"""Shared test fixtures: paths to the shared audio and protocol fixtures, fixture audio loaders, and the
expected texts. Model-backed fixtures (`engines`) are session-scoped: each model loads once per test run."""

from __future__ import annotations

import json
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from koe.audio.pcm import Pcm
from koe.engines.registry import Engines

# Property tests check what the parsers guarantee, never how fast inputs come: no deadline and no timing health
# check, which a loaded CI machine fails (one input drawn in 1.7 s under load). Tests that set their own keep them.
settings.register_profile("koe", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("koe")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FIXTURES = SHARED / "fixtures"
AUDIO = FIXTURES / "audio"
LANGUAGE_AUDIO = REPO / "tests" / "fixtures" / "audio"
"""Japanese and Chinese speech made with Kokoro by scripts/make-fixtures (committed: small and deterministic)."""


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def audio_dir() -> Path:
    return AUDIO


@pytest.fixture(scope="session")
def texts() -> dict[str, str]:
    data: dict[str, str] = json.loads((AUDIO / "texts.json").read_text("utf-8"))
    return data


@pytest.fixture(scope="session")
def language_texts() -> dict[str, str]:
    """The ja_* and zh_* clips' texts, by clip name."""
    data: dict[str, str] = json.loads((LANGUAGE_AUDIO / "texts.json").read_text("utf-8"))
    return data


def load_wav(name: str) -> tuple[Pcm, int]:
    """A fixture WAV as (samples, rate), reading only the bytes actually present (see reply_espeak_22k.wav)."""
    with wave.open(str(AUDIO / name)) as handle:
        rate = handle.getframerate()
        data = handle.readframes(handle.getnframes())
    return np.frombuffer(data[: len(data) - len(data) % 2], dtype="<i2").copy(), rate


@pytest.fixture(scope="session")
def wav() -> Callable[[str], tuple[Pcm, int]]:
    return load_wav


@pytest.fixture(scope="session")
def engines() -> Engines:
    """All four engines with their embedded models (VAD, Whisper, Piper, SmolLM2), loaded once per test run."""
    from koe.config import Settings
    from koe.engines.registry import load_engines

    # Greedy decoding: the small LLM's answers stay the same from run to run, so assertions on them are stable.
    loaded = load_engines(Settings(llm={"temperature": 0.0}))
    failed = {kind: status.error for kind, status in loaded.status.items() if not status.loaded}
    assert not failed, f"engines failed to load: {failed}"
    return loaded
