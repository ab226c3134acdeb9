"""`POST /v1/audio/transcriptions` and `POST /v1/audio/speech` on koe's Whisper and Piper engines, as OpenAI's.

`transcriptions(settings, engines)` and `speech(engines)` give the handlers; `koe.server.openai.api` mounts them
behind the key check. Transcriptions take a multipart upload of any audio PyAV decodes, no larger than
`api.max_upload_mb` (413 beyond it, checked before the body is read when the client declares its length, and while
reading when it does not); the decoding runs on a thread and the transcription on the STT pool. Speech is streamed:
each clause is encoded and sent as soon as Piper has it, so the first audio leaves long before the last clause is
synthesized. Any `model` name is accepted (there is one engine of each kind).

Speech's `voice` is an installed voice (`en_US-joe-medium`, `jf_alpha`, `zf_xiaoxiao`), an Azure voice name
(`ja-JP-NanamiNeural`: the nearest installed voice of its language) or an OpenAI voice name (`alloy`: the voice of
the request's `language`). `language` is koe's own optional field (`ja`, `zh-CN`, `en`, or `auto` to guess
Japanese or Chinese from the input's script); without it an OpenAI voice name means the configured default voice,
whatever the input's language. An installed or Azure voice name always wins over `language`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Message

from koe.audio.files import read_audio
from koe.audio.pcm import ENGINE_RATE, AudioFormatError, Pcm
from koe.audio.resample import Resampler
from koe.config import Settings
from koe.engines.base import STT, TTS, SpeechChunk
from koe.engines.registry import Engines
from koe.engines.voice_names import OPENAI_VOICES, azure_voice, choose_voice
from koe.languages import script_language
from koe.server.language import UnsupportedLanguage, session_language
from koe.server.metrics import METRICS
from koe.server.openai._common import ApiError, Handler, invalid, json_body, number
from koe.server.openai._speech_encode import CONTENT_TYPES, SPEECH_RATE, Tempo, available_formats, speech_encoder
from koe.server.openai._transcript_formats import FORMATS, GRANULARITIES, TIMED_FORMATS, render

BYTES_PER_MB = 1024 * 1024
MULTIPART_OVERHEAD_BYTES = 64 * 1024
"""Room in the body for the form's other fields and boundaries, besides the file itself."""
MAX_FIELD_BYTES = 64 * 1024
MAX_DRAIN_BYTES = 8 * 1024 * 1024
"""How much of an undeclared-length body koe reads past the limit before it answers 413 and closes."""
MAX_INPUT_CHARS = 4096
"""OpenAI's limit on `input`."""
DOOR = "api"
"""The `door` label of the REST API's figures in /metrics."""
AUTO_LANGUAGE = "auto"


def transcriptions(settings: Settings, engines: Engines) -> Handler:
    limit = int(settings.api.max_upload_mb * BYTES_PER_MB)

    async def handler(request: Request) -> Response:
        form = await _form(request, limit)  # first: a client still uploading would not see an error sent before
        stt: STT = engines.require("stt")
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise invalid("attach the audio as the multipart field 'file'", param="file")
        data = await upload.read(limit + 1)
        if len(data) > limit:
            raise _too_large(limit)
        if not data:
            raise invalid("the uploaded file is empty", param="file", code="empty_file")
        fmt = _field(form, "response_format") or "json"
        if fmt not in FORMATS:
            raise invalid(f"response_format must be one of {', '.join(FORMATS)}", param="response_format")
        granularities = tuple(str(g) for g in form.getlist("timestamp_granularities[]"))
        if any(g not in GRANULARITIES for g in granularities):
            raise invalid("timestamp_granularities[] takes 'word' and 'segment'", param="timestamp_granularities")
        if granularities and fmt != "verbose_json":
            raise invalid("timestamp_granularities needs response_format verbose_json", param="response_format")
        try:
            language = session_language(_field(form, "language") or None, stt)
        except UnsupportedLanguage as exc:
            raise invalid(str(exc), param="language", code="unsupported_language") from exc
        pcm = await _decode(data, upload.filename or "the uploaded file")
        transcript = await stt.transcribe(
            pcm,
            language=language,
            prompt=_field(form, "prompt") or None,
            words=fmt in TIMED_FORMATS,
        )
        METRICS.stt.labels(DOOR).observe(transcript.elapsed_s)
        body, content_type = render(transcript, fmt, granularities)
        return Response(body, media_type=content_type)

    return handler


async def _form(request: Request, limit: int) -> Any:
    """The multipart form, with the body capped at `limit` plus room for the other fields."""
    cap = limit + MULTIPART_OVERHEAD_BYTES
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > cap:
        raise _too_large(limit)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise invalid("send the audio as multipart/form-data with a 'file' field", param="file")
    received = 0

    async def receive() -> Message:
        nonlocal received
        message = await request.receive()
        received += len(message.get("body", b""))
        if received > cap:
            await _drain(request, message)
            raise _too_large(limit)
        return message

    try:
        return await Request(request.scope, receive).form(max_files=1, max_fields=32, max_part_size=MAX_FIELD_BYTES)
    except ApiError:
        raise
    except Exception as exc:  # Starlette's MultiPartException and the parser's own errors
        raise invalid(f"the multipart body could not be read: {exc}") from exc


async def _drain(request: Request, message: Message) -> None:
    """Read and drop the rest of an oversize body (up to a bound), so the client is done sending and reads the 413:
    a client still writing when the server answers and closes sees a broken connection instead."""
    drained = 0
    while message.get("more_body", False) and drained < MAX_DRAIN_BYTES:
        message = await request.receive()
        drained += len(message.get("body", b""))


def _field(form: Any, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _too_large(limit: int) -> ApiError:
    size = f"{limit / BYTES_PER_MB:g} MB"
    return ApiError(413, f"the upload exceeds koe's {size} limit (api.max_upload_mb)", param="file", code="too_large")


async def _decode(data: bytes, name: str) -> Pcm:
    try:
        pcm = await asyncio.to_thread(read_audio, data, ENGINE_RATE)
    except AudioFormatError as exc:
        message = f"{name} is not an audio file koe can decode: {exc}"
        raise invalid(message, param="file", code="invalid_file_format") from exc
    if pcm.size == 0:
        raise invalid(f"{name} contains no audio samples", param="file", code="invalid_file_format")
    return pcm


def speech(engines: Engines) -> Handler:
    formats = available_formats()

    async def handler(request: Request) -> Response:
        body = await json_body(request)
        tts: TTS = engines.require("tts")
        text = body.get("input")
        if not isinstance(text, str) or not text.strip():
            raise invalid("input must be a non-empty string", param="input")
        if len(text) > MAX_INPUT_CHARS:
            raise invalid(f"input is {len(text)} characters; the limit is {MAX_INPUT_CHARS}", param="input")
        fmt = body.get("response_format") or "mp3"
        if fmt not in formats:
            raise invalid(f"response_format must be one of {', '.join(formats)}", param="response_format")
        if body.get("stream_format", "audio") != "audio":
            raise invalid("only stream_format 'audio' is supported by koe", param="stream_format")
        voice = _voice(tts, body.get("voice"), _language(tts, body.get("language"), text))
        speed = number(body, "speed", 1.0, 0.25, 4.0) or 1.0
        started = time.perf_counter()
        chunks = tts.synthesize(text, voice).__aiter__()
        # Awaiting the first clause here lets a busy or failing engine answer with a status, not a cut stream.
        try:
            first = await chunks.__anext__()
        except StopAsyncIteration as exc:
            raise invalid("the input has nothing the voice can speak", param="input") from exc
        METRICS.tts_first_audio.labels(DOOR).observe(time.perf_counter() - started)
        audio = _encoded(first, chunks, str(fmt), speed)
        return StreamingResponse(audio, media_type=CONTENT_TYPES[str(fmt)])

    return handler


def _language(tts: TTS, raw: Any, text: str) -> str | None:
    """The language the request asks the voice for: None when it names none (or `auto` finds no CJK script)."""
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str):
        raise invalid("language must be a language tag such as 'ja' or 'zh-CN', or 'auto'", param="language")
    language = script_language(text) if raw.strip().lower() == AUTO_LANGUAGE else raw.strip()
    if language is not None and tts.voice_for(language) is None:
        raise invalid(f"no installed voice speaks {raw!r}", param="language", code="unsupported_language")
    return language


def _voice(tts: TTS, raw: Any, language: str | None) -> str:
    name = raw.get("id") if isinstance(raw, dict) else raw
    if not isinstance(name, str) or not name:
        raise invalid("voice must name a voice", param="voice")
    choice = choose_voice(tts, name, language)
    if choice.note is None:
        return choice.voice
    choices = ", ".join([*tts.voices(), *sorted(OPENAI_VOICES)])
    azure = azure_voice(name)
    why = f"no installed voice speaks {azure.language!r}, the language of" if azure else "unknown voice"
    raise invalid(f"{why} {name!r}; choose one of {choices}, or an Azure voice name", param="voice")


async def _encoded(
    first: SpeechChunk, rest: AsyncIterator[SpeechChunk], fmt: str, speed: float
) -> AsyncIterator[bytes]:
    encoder = speech_encoder(fmt)
    resampler = Resampler(first.rate, SPEECH_RATE)
    tempo = Tempo(speed) if speed != 1.0 else None
    try:
        yield encoder.encode(_speed(tempo, resampler.process(first.pcm)))
        async for chunk in rest:
            yield encoder.encode(_speed(tempo, resampler.process(chunk.pcm)))
        tail = _speed(tempo, resampler.flush())
        if tempo is not None:
            tail = np.concatenate((tail, tempo.flush()))
        yield encoder.encode(tail) + encoder.finish()
    finally:
        close = getattr(rest, "aclose", None)
        if close is not None:
            await close()


def _speed(tempo: Tempo | None, pcm: Pcm) -> Pcm:
    return pcm if tempo is None else tempo.process(pcm)
