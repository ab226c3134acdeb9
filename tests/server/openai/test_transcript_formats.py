"""The transcription response formats from a known transcript: exactly what each format holds, subtitle time
stamps past a minute and an hour, and which granularities verbose_json includes."""

from __future__ import annotations

import json

from koe.engines.base import Segment, Transcript, Word
from koe.server.openai._transcript_formats import render

TRANSCRIPT = Transcript(
    text="Hello there. See you soon.",
    words=(Word("Hello", 0.0, 0.4, 0.9), Word("there.", 0.4, 0.9, 0.8), Word("See", 61.5, 61.7, 0.9)),
    segments=(
        Segment(0.0, 0.9, "Hello there.", seek=0, tokens=(1, 2), avg_logprob=-0.2, no_speech_prob=0.01),
        Segment(3661.25, 3662.5, "See you soon.", seek=3000),
    ),
    language="ja",
    duration_s=3663.0,
)


def test_json_and_text() -> None:
    assert render(TRANSCRIPT, "json") == (b'{"text":"Hello there. See you soon."}', "application/json")
    body, content_type = render(TRANSCRIPT, "text")
    assert body == b"Hello there. See you soon.\n" and content_type.startswith("text/plain")


def test_srt_and_vtt_cues() -> None:
    srt = render(TRANSCRIPT, "srt")[0].decode()
    assert srt == (
        "1\n00:00:00,000 --> 00:00:00,900\nHello there.\n\n2\n01:01:01,250 --> 01:01:02,500\nSee you soon.\n"
    )
    vtt = render(TRANSCRIPT, "vtt")[0].decode()
    assert vtt == (
        "WEBVTT\n\n00:00:00.000 --> 00:00:00.900\nHello there.\n\n01:01:01.250 --> 01:01:02.500\nSee you soon.\n"
    )


def test_verbose_json_granularities() -> None:
    plain = json.loads(render(TRANSCRIPT, "verbose_json")[0])
    assert plain["task"] == "transcribe" and plain["language"] == "japanese" and plain["duration"] == 3663.0
    assert [s["id"] for s in plain["segments"]] == [0, 1] and "words" not in plain
    assert plain["segments"][0] | {"avg_logprob": 0} == {
        "id": 0,
        "seek": 0,
        "start": 0.0,
        "end": 0.9,
        "text": "Hello there.",
        "tokens": [1, 2],
        "temperature": 0.0,
        "avg_logprob": 0,
        "compression_ratio": 0.0,
        "no_speech_prob": 0.01,
    }
    words = json.loads(render(TRANSCRIPT, "verbose_json", ("word",))[0])
    assert "segments" not in words
    assert words["words"][2] == {"word": "See", "start": 61.5, "end": 61.7}
    both = json.loads(render(TRANSCRIPT, "verbose_json", ("word", "segment"))[0])
    assert len(both["words"]) == 3 and len(both["segments"]) == 2
