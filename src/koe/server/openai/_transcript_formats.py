"""The response formats of `/v1/audio/transcriptions`, rendered from an engine `Transcript` as OpenAI shapes them.

Call `render(transcript, fmt, granularities)`: it gives the body and its content type. `json` is `{"text"}`;
`text` is the bare text; `verbose_json` adds task, language (its English name, as OpenAI writes it), duration,
and `segments` and/or `words` as `timestamp_granularities[]` asks (segments when it asks for nothing); `srt` and
`vtt` are subtitles with one cue per segment.
"""

from __future__ import annotations

from typing import Any

import orjson

from koe.engines.base import Transcript
from koe.languages import language_name

FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
GRANULARITIES = ("word", "segment")
TIMED_FORMATS = ("verbose_json", "srt", "vtt")
"""Formats that need Whisper's timestamped decoding (segments), which costs more than plain text."""


def render(transcript: Transcript, fmt: str, granularities: tuple[str, ...] = ()) -> tuple[bytes, str]:
    """The response body for `fmt` and its content type."""
    if fmt == "text":
        return (transcript.text + "\n").encode(), "text/plain; charset=utf-8"
    if fmt == "srt":
        return _subtitles(transcript, srt=True).encode(), "application/x-subrip; charset=utf-8"
    if fmt == "vtt":
        return _subtitles(transcript, srt=False).encode(), "text/vtt; charset=utf-8"
    if fmt == "verbose_json":
        return orjson.dumps(verbose(transcript, granularities)), "application/json"
    return orjson.dumps({"text": transcript.text}), "application/json"


def verbose(transcript: Transcript, granularities: tuple[str, ...] = ()) -> dict[str, Any]:
    body: dict[str, Any] = {
        "task": "transcribe",
        "language": language_name(transcript.language),
        "duration": round(transcript.duration_s, 3),
        "text": transcript.text,
    }
    if "segment" in granularities or not granularities:
        body["segments"] = [
            {
                "id": index,
                "seek": segment.seek,
                "start": round(segment.start_s, 3),
                "end": round(segment.end_s, 3),
                "text": segment.text,
                "tokens": list(segment.tokens),
                "temperature": segment.temperature,
                "avg_logprob": segment.avg_logprob,
                "compression_ratio": segment.compression_ratio,
                "no_speech_prob": segment.no_speech_prob,
            }
            for index, segment in enumerate(transcript.segments)
        ]
    if "word" in granularities:
        body["words"] = [
            {"word": word.text, "start": round(word.start_s, 3), "end": round(word.end_s, 3)}
            for word in transcript.words
        ]
    return body


def _timestamp(seconds: float, separator: str) -> str:
    total_ms = max(0, round(seconds * 1000))
    hours, rest = divmod(total_ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, ms = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{ms:03d}"


def _subtitles(transcript: Transcript, *, srt: bool) -> str:
    separator = "," if srt else "."
    cues: list[str] = []
    for index, segment in enumerate(transcript.segments, start=1):
        timing = f"{_timestamp(segment.start_s, separator)} --> {_timestamp(segment.end_s, separator)}"
        cues.append(f"{index}\n{timing}\n{segment.text}\n" if srt else f"{timing}\n{segment.text}\n")
    body = "\n".join(cues)
    return body if srt else "WEBVTT\n\n" + body
