"""Speech to text with faster-whisper (CTranslate2): tiny.en for English, multilingual Whisper base for the rest.

`WhisperSTT.load()` loads the English model at once; `transcribe()` runs one segment on the STT worker pool. Each
request names its language (a BCP-47 tag, a `Language`, or `auto`; None takes `stt.language`), and the engine picks
the model: English goes to tiny.en (the fastest), every other language and `auto` to the multilingual model, which
loads on first use (or at start, with `stt.preload_multilingual` or a non-English `stt.language`). The multilingual
model is Whisper base, joined once from its two packages into the cache (`koe.engines._whisper_models`), or any
CTranslate2 Whisper directory set as `stt.multilingual_model_path`; when `stt.model_path` is itself multilingual it
serves every language alone. Decoding (the fast path without the 30 s padding, and its fallback) is in
`koe.engines._whisper_decode`.

Transcripts are written the way the request's language reads: Chinese in the script its tag asks for (Whisper base
mixes simplified and traditional characters, so OpenCC converts: zh-CN and zh-Hans to simplified, zh-TW, zh-HK and
zh-Hant to traditional with the region's variants; detected Chinese takes `stt.chinese_script`), and Japanese and
Chinese without spaces between their characters. `Transcript.language` is the language used: the one asked for, or
the one detected.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from koe.audio.pcm import ENGINE_RATE, Pcm, pcm_to_float
from koe.engines._chinese import to_script
from koe.engines._whisper_batch import Batcher
from koe.engines._whisper_decode import DecodeCounts, Decoded, WhisperDecoder
from koe.engines._whisper_models import (
    english_model_dir,
    model_languages,
    multilingual_model_dir,
    multilingual_problem,
    packaged_languages,
)
from koe.engines.base import EngineError, EngineUnavailable, Transcript
from koe.engines.pool import WorkerPool
from koe.languages import (
    Language,
    Script,
    UnsupportedLanguage,
    join_cjk,
    parse_language,
    requested_language,
)

__all__ = ["WhisperSTT", "multilingual_model_dir"]

log = logging.getLogger(__name__)

MIN_SEGMENT_SAMPLES = ENGINE_RATE // 10
"""Shorter than 100 ms there is nothing Whisper can transcribe."""
MAX_SEGMENT_S = 30.0
"""Whisper's window; longer segments are transcribed in several windows, which costs proportionally more."""
UNSPACED = frozenset({"ja", "zh", "yue"})
"""Languages written without spaces between words."""


class WhisperSTT:
    def __init__(
        self,
        primary: WhisperDecoder,
        pool: WorkerPool,
        *,
        default: Language | None,
        multilingual: _Multilingual | None,
        chinese_script: Script = "Hans",
        auto_languages: frozenset[str] = frozenset(),
        batch_size: int = 1,
    ) -> None:
        self._primary = primary
        self.pool = pool
        self._batcher = (
            Batcher(pool, self._group_decoder, batch_size, auto_languages or None) if batch_size > 1 else None
        )
        self.default = default
        """The language of requests that name none; None: detect it."""
        self._multilingual = None if primary.multilingual else multilingual
        self.chinese_script: Script = chinese_script
        self.auto_languages = auto_languages
        self.model_path = primary.path
        self.name = f"faster-whisper:{_model_name(primary.path)}"
        if self._multilingual is not None:
            self.name += f"+{self._multilingual.name}"
        self.load_s = 0.0

    @classmethod
    def load(
        cls,
        model_path: Path | None = None,
        *,
        compute_type: str = "int8",
        threads: int = 2,
        decode_threads: int | None = None,
        workers: int = 1,
        beam_size: int = 1,
        language: str = "en",
        queue_limit: int = 64,
        multilingual: bool = True,
        multilingual_model_path: Path | None = None,
        multilingual_beam_size: int | None = None,
        preload_multilingual: bool = False,
        chinese_script: Script = "Hans",
        auto_languages: tuple[str, ...] = (),
        fast_path: bool = True,
        cache_dir: Path | None = None,
        batch_size: int = 1,
    ) -> WhisperSTT:
        started = time.perf_counter()
        try:
            default = requested_language(language)
            allowed = frozenset(parse_language(tag).code for tag in auto_languages)
        except UnsupportedLanguage as exc:
            raise EngineUnavailable(f"stt.language or stt.auto_languages: {exc}") from exc
        options = _Options(compute_type, threads, workers, fast_path, decode_threads)
        primary = _load_decoder(model_path or english_model_dir(), options, beam_size)
        second = None
        if multilingual and not primary.multilingual:
            second = _Multilingual(multilingual_model_path, cache_dir, options, multilingual_beam_size or beam_size)
        stt = cls(
            primary,
            WorkerPool("stt", workers, queue_limit),
            default=default,
            multilingual=second,
            chinese_script=chinese_script,
            auto_languages=allowed,
            batch_size=batch_size,
        )
        needed = not primary.multilingual and (preload_multilingual or default is None or default.code != "en")
        if needed and second is None:
            raise EngineUnavailable(
                f"stt.language {language!r} needs the multilingual model, and stt.multilingual is off"
            )
        if second is not None and second.problem is not None:
            if needed:  # stt.language (or the preload) asks for what cannot load: say so now, not at every call
                raise EngineUnavailable(f"stt.language {language!r} needs the multilingual model: {second.problem}")
            log.warning("only English can be transcribed: %s", second.problem)
        elif second is not None and needed:
            second.decoder()
        stt.load_s = time.perf_counter() - started
        return stt

    def supports_language(self, code: str | Language) -> bool:
        """Whether `code` (a BCP-47 tag, a Whisper code, a `Language`, or `auto`) can be transcribed, without loading
        anything: tiny.en hears English, the multilingual model the languages in its vocabulary."""
        try:
            language = requested_language(code)
        except UnsupportedLanguage:
            return False
        if language is not None and language.code == "en":
            return True
        languages = self._primary.languages if self._primary.multilingual else None
        if languages is None and self._multilingual is not None and self._multilingual.problem is None:
            languages = self._multilingual.languages
        return languages is not None and (language is None or language.code in languages)

    async def transcribe(
        self, pcm: Pcm, *, language: str | Language | None = None, prompt: str | None = None, words: bool = False
    ) -> Transcript:
        if self._batcher is not None and not prompt and self._primary.fast_eligible(pcm.size, words=words):
            return await self._transcribe_batched(pcm, language)
        return await self.pool.run(self.transcribe_sync, pcm, language=language, prompt=prompt, words=words)

    async def _transcribe_batched(self, pcm: Pcm, language: str | Language | None) -> Transcript:
        """A segment that may share a batch with other streams' (`koe.engines._whisper_batch`)."""
        assert self._batcher is not None
        asked = self._checked(pcm, language)
        primary = self._primary.multilingual or (asked is not None and asked.code == "en")
        decoded, elapsed = await self._batcher.transcribe(
            _engine_audio(pcm), asked.code if asked is not None else None, "primary" if primary else "multilingual"
        )
        return self._written(decoded, asked, pcm.size / ENGINE_RATE, elapsed)

    def _checked(self, pcm: Pcm, language: str | Language | None) -> Language | None:
        """The language asked for (None: detect it); `EngineError` for empty audio or a language not supported."""
        if pcm.size == 0:
            raise EngineError("cannot transcribe an empty audio segment")
        try:
            asked = self.default if language is None else requested_language(language)
        except UnsupportedLanguage as exc:
            raise EngineError(str(exc)) from exc
        if not self.supports_language(asked or "auto"):
            raise EngineError(self._unsupported(asked.tag if asked is not None else "auto"))
        return asked

    def _group_decoder(self, group: str) -> WhisperDecoder:
        if group == "primary":
            return self._primary
        assert self._multilingual is not None  # supports_language() said so
        return self._multilingual.decoder()

    def transcribe_sync(
        self,
        pcm: Pcm,
        *,
        language: str | Language | None = None,
        prompt: str | None = None,
        words: bool = False,
        padded: bool = False,
    ) -> Transcript:
        """Blocking transcription of 16 kHz PCM16; for the CLI and benchmarks. Servers use `transcribe()`.
        `padded` takes Whisper's padded 30 s call even where the fast path would do (the benchmarks compare them)."""
        asked = self._checked(pcm, language)
        decoder = self._decoder_for(asked)
        audio = _engine_audio(pcm)
        started = time.perf_counter()
        decoded = decoder.decode(
            audio,
            asked.code if asked is not None else None,
            prompt,
            words=words,
            allowed=self.auto_languages or None,
            padded=padded,
        )
        return self._written(decoded, asked, pcm.size / ENGINE_RATE, time.perf_counter() - started)

    def _decoder_for(self, language: Language | None) -> WhisperDecoder:
        if self._primary.multilingual or (language is not None and language.code == "en"):
            return self._primary
        assert self._multilingual is not None  # supports_language() said so
        return self._multilingual.decoder()

    def _written(self, decoded: Decoded, asked: Language | None, duration_s: float, elapsed_s: float) -> Transcript:
        """The decoded text as the language is written: in its script, and without spaces where it has none."""
        code = decoded.language
        text, words, segments = decoded.text, decoded.words, decoded.segments
        if code in ("zh", "yue"):
            script = asked.script if asked is not None and asked.script else self.chinese_script
            region = asked.region if asked is not None and asked.code == code else ""
            text = to_script(text, script, region)
            words = tuple(replace(w, text=to_script(w.text, script, region)) for w in words)
            segments = tuple(replace(s, text=to_script(s.text, script, region)) for s in segments)
        if code in UNSPACED:
            text = join_cjk(text)
            segments = tuple(replace(s, text=join_cjk(s.text)) for s in segments)
        return Transcript(
            text=text,
            words=words,
            segments=segments,
            language=code,
            duration_s=duration_s,
            elapsed_s=elapsed_s,
        )

    def _unsupported(self, tag: str) -> str:
        if self._multilingual is not None and self._multilingual.problem is not None:
            return f"cannot transcribe {tag!r}: {self._multilingual.problem}"
        if not self._primary.multilingual and self._multilingual is None:
            return (
                f"language {tag!r} is not supported by the Whisper model at {self.model_path} (an English-only "
                "model, and stt.multilingual is off); turn it on or configure a multilingual model"
            )
        return f"language {tag!r} is not supported by the multilingual Whisper model"

    @property
    def batches(self) -> dict[int, int]:
        """How many batches of each size were decoded together (`stt.batch_size`; empty when 1)."""
        return dict(self._batcher.batches) if self._batcher is not None else {}

    @property
    def counts(self) -> DecodeCounts:
        """How the first model's segments were decoded (fast, padded, fallback, loops cut)."""
        return self._primary.counts

    @property
    def decoders(self) -> dict[str, WhisperDecoder]:
        """The loaded models by name, for the benchmarks."""
        found = {_model_name(self._primary.path): self._primary}
        if self._multilingual is not None and self._multilingual.loaded:
            found[self._multilingual.name] = self._multilingual.decoder()
        return found


class _Multilingual:
    """The multilingual model, loaded on first use, once, by whichever worker needs it first."""

    def __init__(self, path: Path | None, cache_dir: Path | None, options: _Options, beam_size: int) -> None:
        self._path = path
        self._cache_dir = cache_dir
        self._options = options
        self._beam_size = beam_size
        self._decoder: WhisperDecoder | None = None
        self._error: EngineUnavailable | None = None
        self._lock = threading.Lock()
        self.name = _model_name(path) if path is not None else "base"
        self.problem: str | None = None
        """Why it cannot load, when that is known without trying (a missing package or directory)."""
        if path is None:
            self.languages = packaged_languages()
            self.problem = multilingual_problem()
        else:
            self.languages = model_languages(path) or frozenset()
            if not self.languages:
                self.problem = f"stt.multilingual_model_path {path} is not a multilingual CTranslate2 Whisper model"

    @property
    def loaded(self) -> bool:
        return self._decoder is not None

    def decoder(self) -> WhisperDecoder:
        with self._lock:
            if self._decoder is None:
                if self._error is not None:
                    raise self._error
                try:
                    path = self._path or multilingual_model_dir(self._cache_dir)
                    self._decoder = _load_decoder(path, self._options, self._beam_size)
                except EngineUnavailable as exc:
                    self._error = exc
                    raise
                log.info("multilingual Whisper model loaded from %s", path)
            return self._decoder


@dataclass(frozen=True, slots=True)
class _Options:
    compute_type: str
    threads: int
    workers: int
    fast_path: bool
    decode_threads: int | None = None
    """The fast path's decoder threads, from a second copy of the model; None: `threads`, from the one copy."""


def _load_decoder(path: Path, options: _Options, beam_size: int) -> WhisperDecoder:
    from faster_whisper import WhisperModel

    if not (path / "model.bin").is_file():
        raise EngineUnavailable(f"{path} is not a CTranslate2 Whisper model directory (no model.bin)")
    try:
        model = WhisperModel(
            str(path),
            device="cpu",
            compute_type=options.compute_type,
            cpu_threads=options.threads,
            num_workers=options.workers,
            local_files_only=True,
        )
        generator = None
        if options.fast_path and options.decode_threads not in (None, options.threads):
            import ctranslate2

            generator = ctranslate2.models.Whisper(
                str(path),
                device="cpu",
                compute_type=options.compute_type,
                intra_threads=options.decode_threads,
                inter_threads=options.workers,
            )
    except Exception as exc:  # CTranslate2 raises RuntimeError/ValueError with its own messages
        raise EngineUnavailable(f"cannot load Whisper model from {path}: {exc}") from exc
    return WhisperDecoder(
        model,
        path,
        beam_size,
        options.fast_path,
        languages=model_languages(path) or frozenset({"en"}),
        generator=generator,
    )


def _engine_audio(pcm: Pcm) -> npt.NDArray[np.float32]:
    """Float audio for Whisper, silence-padded to `MIN_SEGMENT_SAMPLES`."""
    audio = pcm_to_float(pcm)
    if audio.size < MIN_SEGMENT_SAMPLES:
        audio = np.concatenate((audio, np.zeros(MIN_SEGMENT_SAMPLES - audio.size, dtype=np.float32)))
    return audio


def _model_name(path: Path) -> str:
    return "tiny.en" if path.name == "model" else path.name
