"""Every installed voice behind one `TTS`: call `TTSRouter.load()`; the doors and the voice engine see only this.

English is spoken by Piper, Japanese and Chinese by Kokoro (`tts_kokoro`). A voice name says which engine speaks
it (`en_US-joe-medium` is Piper's, `jf_alpha`, `zf_xiaoxiao` and `zh:jf_alpha` are Kokoro's), and `voice_for()`
gives the voice configured for a language (`tts.voices`). Both engines run in one bounded worker pool, so TTS takes
no more cores with two engines than with one. Kokoro is optional: when its packages are missing the router
speaks English only, and says so in the log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from koe.engines.base import TTS, EngineError, EngineUnavailable, SpeechChunk, VoiceInfo
from koe.engines.pool import Cancelled, WorkerPool
from koe.languages import UnsupportedLanguage, parse_language

log = logging.getLogger("koe.engines.tts")


class Backend(TTS, Protocol):
    """A TTS engine the router drives: the `TTS` interface, blocking synthesis for the CLI and benchmarks, and
    `warm()`, which loads now what the engine would load on first use."""

    def synthesize_sync(
        self, text: str, voice: str | None = None, cancelled: Cancelled | None = None
    ) -> Iterator[SpeechChunk]: ...

    def warm(self, languages: Sequence[str]) -> None: ...


class TTSRouter:
    def __init__(
        self,
        backends: Sequence[Backend],
        default_voice: str,
        pool: WorkerPool,
        voices: Mapping[str, str] | None = None,
    ) -> None:
        if not backends:
            raise EngineUnavailable("no TTS engine is installed")
        self._backends = tuple(backends)
        self.pool = pool
        self.load_s = 0.0
        if not self.has_voice(default_voice):
            raise EngineUnavailable(f"the voice {default_voice!r} is not installed (installed: {self._listing()})")
        self.default_voice = default_voice
        self._voices: dict[str, str] = {}
        for language, name in (voices or {}).items():
            if self.has_voice(name):
                self._voices[language] = name
            else:
                log.warning("tts.voices.%s: the voice %r is not installed (installed: %s)", language, name,
                            self._listing())  # fmt: skip
        self.name = "+".join(backend.name for backend in self._backends)

    @classmethod
    def load(
        cls,
        voice: str,
        *,
        voices: Mapping[str, str] | None = None,
        voice_dirs: list[Path] | None = None,
        threads: int = 1,
        workers: int = 1,
        queue_limit: int = 64,
        preload: Sequence[str] = (),
    ) -> TTSRouter:
        """Piper with its voices, and Kokoro (model joined, voices found; the languages in `preload` loaded now,
        the others on first use). Either engine may be missing, with a warning; `voice` must be installed."""
        from koe.engines.tts_kokoro import KokoroTTS
        from koe.engines.tts_piper import DEFAULT_VOICE, PiperTTS, discover_voices

        started = time.perf_counter()
        pool = WorkerPool("tts", workers, queue_limit)
        backends: list[Backend] = []
        failures: list[str] = []
        piper_voices = discover_voices(voice_dirs)
        wanted = (voice, (voices or {}).get("en", ""), DEFAULT_VOICE)
        piper_voice = next((name for name in wanted if name in piper_voices), DEFAULT_VOICE)
        try:
            backends.append(PiperTTS.load(piper_voice, voice_dirs=voice_dirs, threads=threads, pool=pool))
        except EngineUnavailable as exc:
            failures.append(f"Piper: {exc}")
            log.warning("English speech is unavailable (%s)", exc)
        try:
            backends.append(KokoroTTS.load(voice_dirs=voice_dirs, threads=threads, pool=pool, defaults=voices or {}))
        except EngineUnavailable as exc:
            failures.append(f"Kokoro: {exc}")
            log.warning("Japanese and Chinese speech are unavailable (%s)", exc)
        if not backends:
            pool.shutdown()
            raise EngineUnavailable("no TTS engine could load: " + "; ".join(failures))
        router = cls(backends, voice, pool, voices)
        if preload:
            router.warm(preload)
        router.load_s = time.perf_counter() - started
        return router

    def warm(self, languages: Sequence[str]) -> None:
        """Load now what the engines would load at the first use of these languages (Kokoro's model, its G2Ps),
        and speak a word in each."""
        codes: list[str] = []
        for language in languages:
            if self.voice_for(language) is None:
                raise EngineUnavailable(f"tts.preload: no installed voice speaks {language!r} ({self._listing()})")
            codes.append(parse_language(language).code)
        for backend in self._backends:
            backend.warm(codes)

    def _listing(self) -> str:
        return ", ".join(self.voices()) or "none"

    def _backend(self, name: str) -> Backend:
        for backend in self._backends:
            if backend.has_voice(name):
                return backend
        raise EngineError(f"unknown voice {name!r}; installed voices: {self._listing()}")

    def voices(self) -> list[str]:
        return [name for backend in self._backends for name in backend.voices()]

    def has_voice(self, name: str) -> bool:
        return any(backend.has_voice(name) for backend in self._backends)

    def voice_info(self, name: str) -> VoiceInfo:
        return self._backend(name).voice_info(name)

    def voice_for(self, language: str) -> str | None:
        try:
            code = parse_language(language).code
        except UnsupportedLanguage:
            return None
        configured = self._voices.get(code)
        if configured is not None and self.voice_info(configured).language == code:
            return configured
        if self.voice_info(self.default_voice).language == code:
            return self.default_voice
        for backend in self._backends:
            if (found := backend.voice_for(code)) is not None:
                return found
        return None

    def sample_rate(self, voice: str | None = None) -> int:
        return self.voice_info(voice or self.default_voice).rate

    def synthesize_sync(
        self, text: str, voice: str | None = None, cancelled: Cancelled | None = None
    ) -> Iterator[SpeechChunk]:
        """Blocking synthesis, clause by clause; for the CLI and benchmarks. Servers use `synthesize()`."""
        name = voice or self.default_voice
        return self._backend(name).synthesize_sync(text, name, cancelled)

    async def synthesize(self, text: str, voice: str | None = None) -> AsyncIterator[SpeechChunk]:
        name = voice or self.default_voice
        async for chunk in self._backend(name).synthesize(text, name):
            yield chunk
