"""The remote STT: any OpenAI-compatible `POST {base_url}/audio/transcriptions` (`stt.backend = "remote"`).

Works with koe's own endpoint (a koe node with its doors off, docs/cluster.md), Speaches, OpenAI and Azure OpenAI
(an `*.azure.com` base URL is sent the `api-key` header). Each segment goes up as a 16 kHz WAV in a multipart form
with `model`, the language's ISO 639-1 code (what OpenAI takes) and the prompt, as `response_format: json`; as
`verbose_json` when its figures are needed (the language detected for `auto`; `words` and `segments` when word
timings are asked for), since verbose_json costs a timestamped decoding on koe's endpoint and Whisper's own.
Chinese comes back in the script the request's tag names, converted here as the embedded Whisper does, since the
wire carries only the code. Failures map as every remote backend's do (`koe.engines._remote`): refused connection
`EngineUnavailable`, no answer within `stt.timeout_s` `EngineTimeout`, an error status `EngineError` with the
server's message. At most `stt.workers` requests are in flight at once (`pool`, an `InFlight`), so partial
transcripts skip while the server is busy with this node's finals, as they do on a local pool.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import httpx
import orjson

from koe.audio.files import wav_bytes
from koe.audio.pcm import ENGINE_RATE, Pcm
from koe.engines._chinese import to_script
from koe.engines._remote import InFlight, RemoteHealth, failure, remote_client, status_error
from koe.engines.base import EngineError, Pool, Segment, Transcript, Word
from koe.languages import WHISPER_LANGUAGES, Language, UnsupportedLanguage, requested_language

_CODES = {name.replace("_", " "): code for code, name in WHISPER_LANGUAGES.items()}
"""verbose_json's language names (`japanese`, as OpenAI writes them) back to Whisper's codes."""


class RemoteSTT:
    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        language: str = "en",
        timeout_s: float = 30.0,
        workers: int = 1,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.language = language
        self.timeout_s = timeout_s
        self.name = f"remote:{model}@{self.base_url}"
        self._in_flight = InFlight("stt", workers)
        self.pool: Pool | None = self._in_flight
        """At most `workers` (`stt.workers`) transcriptions in flight to the server; partial transcripts read it."""
        self._url = f"{self.base_url}/audio/transcriptions"
        self._client = remote_client(self.base_url, api_key, timeout_s, transport=transport)
        self._health = RemoteHealth("STT", self._client, self.base_url)

    def supports_language(self, code: str | Language) -> bool:
        """Any language Whisper knows, and `auto`: the server decides, and refuses one it lacks with a status."""
        try:
            requested_language(code)
        except UnsupportedLanguage:
            return False
        return True

    async def transcribe(
        self, pcm: Pcm, *, language: str | Language | None = None, prompt: str | None = None, words: bool = False
    ) -> Transcript:
        if pcm.size == 0:
            raise EngineError("cannot transcribe an empty audio segment")
        try:
            wanted = requested_language(self.language if language is None else language)
        except UnsupportedLanguage as exc:
            raise EngineError(str(exc)) from exc
        # verbose_json only when its figures are needed: the language detected for `auto`, or word timings. koe's
        # own endpoint (like Whisper's reference) decodes verbose_json with timestamps, at about 5x the cost.
        verbose = wanted is None or words
        form: dict[str, Any] = {"model": self.model, "response_format": "verbose_json" if verbose else "json"}
        if wanted is not None:
            form["language"] = wanted.code
        if prompt:
            form["prompt"] = prompt
        if words:
            form["timestamp_granularities[]"] = ["word", "segment"]
        files = {"file": ("segment.wav", wav_bytes(pcm, ENGINE_RATE), "audio/wav")}
        async with self._in_flight:
            started = time.perf_counter()
            transcript = await self._post(form, files, wanted.code if wanted is not None else "en")
            elapsed = time.perf_counter() - started
        duration = transcript.duration_s or pcm.size / ENGINE_RATE
        return _in_script(replace(transcript, duration_s=duration, elapsed_s=elapsed), wanted)

    async def _post(self, form: dict[str, Any], files: dict[str, Any], asked: str) -> Transcript:
        """One request, its outcome recorded for `check()` (a request cancelled before it has one records none)."""
        try:
            response = await self._client.post(self._url, data=form, files=files)
        except httpx.HTTPError as exc:
            error = failure("STT", self._url, exc, "stt.timeout_s", self.timeout_s)
            self._health.record(str(error))
            raise error from exc
        if response.status_code >= 400:
            error = await status_error("STT", self._url, response)
            self._health.record(str(error) if response.status_code >= 500 else None)  # a 4xx refuses this one only
            raise error
        try:
            transcript = _transcript(response.content, self._url, asked)
        except EngineError as exc:  # a server that answers, but not with a transcription
            self._health.record(str(exc))
            raise
        self._health.record(None)
        return transcript

    async def check(self) -> str | None:
        """Why the endpoint cannot transcribe now (from the last request, or a probe), or None; for /healthz."""
        return await self._health.check()

    async def aclose(self) -> None:
        await self._client.aclose()


def _transcript(body: bytes, url: str, asked: str) -> Transcript:
    """A `Transcript` from a verbose_json or a plain `json` body (`{"text"}`: then in the language `asked`)."""
    try:
        data = orjson.loads(body)
        text = str(data["text"]).strip()
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise EngineError(
            f"the STT endpoint {url} answered something other than a transcription: {body[:200]!r}"
        ) from exc
    name = str(data.get("language") or "").lower()
    segments = tuple(
        Segment(
            float(s.get("start", 0.0)),
            float(s.get("end", 0.0)),
            str(s.get("text", "")),
            int(s.get("seek", 0)),
            tuple(int(t) for t in s.get("tokens") or ()),
            float(s.get("temperature", 0.0)),
            float(s.get("avg_logprob", 0.0)),
            float(s.get("compression_ratio", 0.0)),
            float(s.get("no_speech_prob", 0.0)),
        )
        for s in data.get("segments") or ()
    )
    words = tuple(
        Word(
            str(w.get("word", "")),
            float(w.get("start", 0.0)),
            float(w.get("end", 0.0)),
            float(w.get("probability", 1.0)),
        )
        for w in data.get("words") or ()
    )
    return Transcript(
        text,
        words=words,
        segments=segments,
        language=_CODES.get(name, name or asked),
        duration_s=float(data.get("duration") or 0.0),
    )


def _in_script(transcript: Transcript, wanted: Language | None) -> Transcript:
    """Chinese in the script `wanted` names (a detected Chinese stays as the server wrote it)."""
    if wanted is None or wanted.script is None or not transcript.text:
        return transcript
    script, region = wanted.script, wanted.region
    return replace(
        transcript,
        text=to_script(transcript.text, script, region),
        words=tuple(replace(w, text=to_script(w.text, script, region)) for w in transcript.words),
        segments=tuple(replace(s, text=to_script(s.text, script, region)) for s in transcript.segments),
    )
