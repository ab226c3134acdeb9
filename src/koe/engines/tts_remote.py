"""The remote TTS: any OpenAI-compatible `POST {base_url}/audio/speech` with streaming PCM (`tts.backend =
"remote"`).

Works with koe's own endpoint (a koe node with its doors off, docs/cluster.md), Speaches, OpenAI and Azure OpenAI.
Each clause is asked for as `response_format: "pcm"` (raw 24 kHz s16le, as OpenAI defines it) and handed on as
the bytes arrive, so a reply's first audio waits for the server's first clause, not its last. The voices are the
configured ones (`tts.voice` and `tts.voices`, whose keys give each one's language), plus, when the server is koe,
the voices its `GET /models` lists (`koe_kind: "voice"` with `koe_language`), learned at start, or at the first
health check (/healthz) that finds the server up. Failures map
as every remote backend's do (`koe.engines._remote`); an error status is raised before any audio, so a door can
still answer it in its protocol.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping

import httpx
import numpy as np

from koe.engines._remote import PROBE_TIMEOUT_S, RemoteHealth, failure, remote_client, status_error
from koe.engines.base import EngineError, Pool, SpeechChunk, VoiceInfo
from koe.languages import UnsupportedLanguage, parse_language

PCM_RATE = 24000
"""The rate of OpenAI's `pcm` speech format."""
MIN_CHUNK_BYTES = 4800
"""Bytes gathered before a chunk is handed on (100 ms at 24 kHz): fewer, larger chunks for the resampler."""


class RemoteTTS:
    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        default_voice: str,
        voices: Mapping[str, str],
        api_key: str | None = None,
        timeout_s: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.default_voice = default_voice
        self.timeout_s = timeout_s
        self.name = f"remote:{model}@{self.base_url}"
        self.pool: Pool | None = None
        """None: syntheses queue at the remote server, not here."""
        self._by_language = {_code(language): voice for language, voice in voices.items()}
        self._languages = {voice: language for language, voice in self._by_language.items()}
        self._languages.setdefault(default_voice, "en")  # a default voice no language names
        self._learned = False
        """Whether the server answered `GET /models` (koe's lists its voices there)."""
        self._url = f"{self.base_url}/audio/speech"
        self._client = remote_client(self.base_url, api_key, timeout_s, accept="audio/pcm", transport=transport)
        self._health = RemoteHealth("TTS", self._client, self.base_url)

    def learn_voices(self, api_key: str | None = None) -> int:
        """Add the voices a koe server lists in `GET /models`; how many it listed (0: none, or not koe, or down).
        Synchronous, for start-up; a server that was down then is asked again by `check()`."""
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        try:
            response = httpx.get(f"{self.base_url}/models", headers=headers, timeout=PROBE_TIMEOUT_S)
        except httpx.HTTPError:
            return 0
        return self._learned_from(response)

    def _learned_from(self, response: httpx.Response) -> int:
        try:
            models = response.json().get("data") or [] if response.status_code == 200 else []
        except (ValueError, AttributeError):
            return 0
        listed = [m for m in models if isinstance(m, dict) and m.get("koe_kind") == "voice"]
        for model in listed:
            self._languages.setdefault(str(model["id"]), str(model.get("koe_language") or "en"))
        self._learned = self._learned or response.status_code == 200
        return len(listed)

    def voices(self) -> list[str]:
        return sorted(self._languages)

    def has_voice(self, name: str) -> bool:
        return name in self._languages

    def voice_info(self, name: str) -> VoiceInfo:
        if name not in self._languages:
            raise EngineError(f"unknown voice {name!r}; the remote TTS has {', '.join(self.voices())}")
        return VoiceInfo(name, self._languages[name], None, PCM_RATE, "remote")

    def voice_for(self, language: str) -> str | None:
        code = _code(language)
        if code in self._by_language:
            return self._by_language[code]
        return next((voice for voice, spoken in sorted(self._languages.items()) if spoken == code), None)

    async def synthesize(self, text: str, voice: str | None = None) -> AsyncIterator[SpeechChunk]:
        body = {"model": self.model, "input": text, "voice": voice or self.default_voice, "response_format": "pcm"}
        problem: str | None = None
        answered = False
        try:
            async with self._client.stream("POST", self._url, json=body) as response:
                answered = True
                if response.status_code >= 400:
                    error = await status_error("TTS", self._url, response)
                    problem = str(error) if response.status_code >= 500 else None
                    raise error
                first = True
                async for pcm in _pcm_chunks(response):
                    yield SpeechChunk(pcm, PCM_RATE, text if first else "")
                    first = False
        except httpx.HTTPError as exc:
            error = failure("TTS", self._url, exc, "tts.timeout_s", self.timeout_s)
            problem = str(error)
            raise error from exc
        finally:
            if answered or problem is not None:  # closed before any answer: nothing learned either way
                self._health.record(problem)

    async def check(self) -> str | None:
        """Why the endpoint cannot speak now (from the last request, or a probe), or None; for /healthz. The
        voices of a server that was down at start are learned here, once it answers."""
        problem = await self._health.check()
        if problem is None and not self._learned:
            with contextlib.suppress(httpx.HTTPError):
                self._learned_from(await self._client.get(f"{self.base_url}/models", timeout=PROBE_TIMEOUT_S))
        return problem

    async def aclose(self) -> None:
        await self._client.aclose()


async def _pcm_chunks(response: httpx.Response) -> AsyncIterator[np.ndarray]:
    """The body's s16le samples in chunks of at least `MIN_CHUNK_BYTES`, an odd byte carried to the next."""
    pending = b""
    async for data in response.aiter_bytes():
        pending += data
        if len(pending) >= MIN_CHUNK_BYTES:
            whole = len(pending) - len(pending) % 2
            yield np.frombuffer(pending[:whole], dtype="<i2").copy()
            pending = pending[whole:]
    if len(pending) >= 2:
        yield np.frombuffer(pending[: len(pending) - len(pending) % 2], dtype="<i2").copy()


def _code(language: str) -> str:
    """The ISO 639-1 code of a tag (`ja-JP` → `ja`); the tag itself, lower case, when no language has it."""
    try:
        return parse_language(language).code
    except UnsupportedLanguage:
        return language.strip().lower()
