"""Loading the configured backends once, and what /healthz reports about them.

`load_engines()` loads each requested backend in turn, reporting progress, and records a failure instead of
raising it: a server whose TTS voice is missing still transcribes. `Engines` is what the doors and the voice engine
receive; `Engines.require("stt")` gives a backend, typed as its interface (`STT`), or a clear error naming why it is
missing.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, overload

from koe.config import Settings
from koe.engines.base import LLM, STT, TTS, VAD, EngineUnavailable, Pool
from koe.engines.pool import WorkerPool

EngineKind = Literal["vad", "stt", "tts", "llm"]
ALL_ENGINES: tuple[EngineKind, ...] = ("vad", "stt", "tts", "llm")
Engine = VAD | STT | TTS | LLM


@dataclass
class EngineStatus:
    kind: EngineKind
    loaded: bool = False
    name: str = ""
    load_s: float = 0.0
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"loaded": self.loaded, "name": self.name, "load_s": round(self.load_s, 3)}
        if self.error:
            data["error"] = self.error
        return data


@dataclass
class Engines:
    vad: VAD | None = None
    stt: STT | None = None
    tts: TTS | None = None
    llm: LLM | None = None
    status: dict[str, EngineStatus] = field(default_factory=dict)
    remote_checks: dict[str, Callable[[], Awaitable[str | None]]] = field(default_factory=dict)
    """The health check of each remote STT or TTS (`stt_remote`, `tts_remote`), by kind; the LLM declares its own."""

    @overload
    def require(self, kind: Literal["vad"]) -> VAD: ...
    @overload
    def require(self, kind: Literal["stt"]) -> STT: ...
    @overload
    def require(self, kind: Literal["tts"]) -> TTS: ...
    @overload
    def require(self, kind: Literal["llm"]) -> LLM: ...
    @overload
    def require(self, kind: EngineKind) -> Engine: ...

    def require(self, kind: EngineKind) -> Engine:
        """The backend of `kind`, typed as its interface; `EngineUnavailable` (saying why) when it is not loaded."""
        engine = self.get(kind)
        if engine is None:
            status = self.status.get(kind)
            why = status.error if status and status.error else "it was not loaded"
            raise EngineUnavailable(f"the {kind} engine is unavailable: {why}")
        return engine

    def get(self, kind: EngineKind) -> Engine | None:
        found: dict[EngineKind, Engine | None] = {"vad": self.vad, "stt": self.stt, "tts": self.tts, "llm": self.llm}
        return found[kind]

    def pools(self) -> list[Pool]:
        """The worker pools of the loaded backends (a remote LLM has none)."""
        found = (engine.pool for engine in (self.stt, self.tts, self.llm) if engine is not None)
        return [pool for pool in found if pool is not None]

    async def check(self) -> dict[str, str]:
        """Why a loaded engine cannot serve right now, by kind (a remote LLM, STT or TTS that is down or stalled);
        cheap, as each backend's `check()` is."""
        problems: dict[str, str] = {}
        if self.llm is not None and (problem := await self.llm.check()) is not None:
            problems["llm"] = problem
        for kind, check in self.remote_checks.items():
            if (problem := await check()) is not None:
                problems[kind] = problem
        return problems

    def health(self, problems: Mapping[str, str] | None = None) -> dict[str, Any]:
        """What /healthz shows: each engine (`ready` when loaded and without one of `problems`) and each pool."""
        problems = problems or {}
        engines: dict[str, Any] = {}
        for kind, status in self.status.items():
            entry = status.as_dict()
            entry["ready"] = status.loaded and kind not in problems
            if kind in problems:
                entry["error"] = problems[kind]
            engines[kind] = entry
        return {
            "engines": engines,
            "pools": {pool.name: {"depth": pool.depth, "active": pool.active} for pool in self.pools()},
        }


def load_engines(
    settings: Settings,
    kinds: Iterable[EngineKind] = ALL_ENGINES,
    progress: Callable[[str], None] | None = None,
) -> Engines:
    engines = Engines()
    say = progress or (lambda _msg: None)
    loaders: dict[EngineKind, Callable[[], Any]] = {
        "vad": lambda: _load_vad(settings),
        "stt": lambda: _shared_fairly(_load_stt(settings, engines), settings.stt.session_queue_limit),
        "tts": lambda: _shared_fairly(_load_tts(settings, engines), settings.tts.session_queue_limit),
        "llm": lambda: _shared_fairly(_load_llm(settings), settings.llm.session_queue_limit),
    }
    for kind in kinds:
        status = EngineStatus(kind)
        say(f"loading {kind}…")
        started = time.perf_counter()
        try:
            engine = loaders[kind]()
        except Exception as exc:  # any backend failure is reported, not fatal
            status.error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, EngineUnavailable) else str(exc)
            say(f"{kind} failed to load: {status.error}")
        else:
            setattr(engines, kind, engine)
            status.loaded = True
            status.name = str(engine.name)
            status.load_s = time.perf_counter() - started
            say(f"{kind} ready: {status.name} ({status.load_s:.2f} s)")
        engines.status[kind] = status
    return engines


Pooled = TypeVar("Pooled", STT, TTS, LLM)


def _shared_fairly(engine: Pooled, session_queue_limit: int) -> Pooled:
    """The engine with its pool's limit per session (`*.session_queue_limit`): one session cannot fill a queue
    that other sessions need (see `koe.engines.pool`)."""
    pool = engine.pool
    if isinstance(pool, WorkerPool):
        pool.owner_limit = min(pool.queue_limit, session_queue_limit)
    return engine


def _load_vad(settings: Settings) -> VAD:
    from koe.engines.vad_silero import SileroVAD

    return SileroVAD.load(settings.vad.model_path, threads=settings.vad.threads)


def _load_stt(settings: Settings, engines: Engines) -> STT:
    s = settings.stt
    if s.backend == "remote":
        from koe.engines.stt_remote import RemoteSTT

        remote = RemoteSTT(
            s.base_url,
            s.model,
            api_key=s.api_key.get_secret_value() if s.api_key else None,
            language=s.language,
            timeout_s=s.timeout_s,
            workers=s.workers,
        )
        engines.remote_checks["stt"] = remote.check
        return remote
    from koe.engines.stt_whisper import WhisperSTT

    return WhisperSTT.load(
        s.model_path,
        compute_type=s.compute_type,
        threads=s.threads,
        decode_threads=s.decode_threads,
        workers=s.workers,
        beam_size=s.beam_size,
        language=s.language,
        queue_limit=s.queue_limit,
        multilingual=s.multilingual,
        multilingual_model_path=s.multilingual_model_path,
        multilingual_beam_size=s.multilingual_beam_size,
        preload_multilingual=s.preload_multilingual,
        chinese_script=s.chinese_script,
        auto_languages=tuple(s.auto_languages),
        fast_path=s.fast_path,
        cache_dir=s.cache_dir,
        batch_size=s.batch_size,
    )


def _load_tts(settings: Settings, engines: Engines) -> TTS:
    s = settings.tts
    if s.backend == "remote":
        from koe.engines.tts_remote import RemoteTTS

        key = s.api_key.get_secret_value() if s.api_key else None
        remote = RemoteTTS(
            s.base_url, s.model, default_voice=s.voice, voices=s.voices, api_key=key, timeout_s=s.timeout_s
        )
        remote.learn_voices(key)  # a koe model node's voices; a server that is down now is asked nothing more
        engines.remote_checks["tts"] = remote.check
        return remote
    from koe.engines.tts_router import TTSRouter

    return TTSRouter.load(
        s.voice,
        voices=s.voices,
        voice_dirs=s.voice_dirs,
        threads=s.threads,
        workers=s.workers,
        queue_limit=s.queue_limit,
        preload=s.preload,
    )


def _load_llm(settings: Settings) -> LLM:
    s = settings.llm
    if s.backend == "remote":
        from koe.engines.llm_openai import OpenAICompatibleLLM

        return OpenAICompatibleLLM(
            s.base_url,
            s.model,
            api_key=s.api_key.get_secret_value() if s.api_key else None,
            api_version=s.api_version,
            temperature=s.temperature,
            max_tokens=s.max_tokens,
            timeout_s=s.timeout_s,
        )
    from koe.engines.llm_llama import LlamaLLM

    return LlamaLLM.load(
        s.model_path,
        threads=s.threads,
        batch_threads=s.batch_threads,
        context_tokens=s.context_tokens,
        temperature=s.temperature,
        max_tokens=s.max_tokens,
        queue_limit=s.queue_limit,
    )
