"""Incremental transcription: what was said before a caller's mid-turn pause is not transcribed again.

Each pause starts a speculation that transcribes the turn so far. When the caller goes on speaking, that
speculation is dropped, but its transcript is still good for the audio it covered, which ended in a pause (so no
word is cut). `Heard.keep(speculation)` keeps it as the turn's *heard prefix*; at the next pause `Heard.transcribe`
waits for the prefix's transcript (usually long done) and transcribes only the tail after it, so the work left at
the pause that ends the turn is the last phrase, not the whole turn. A prefix shorter than `MIN_PREFIX_S`, one
whose transcript failed or came back empty fall back to the whole turn; a tail shorter than `MIN_TAIL_S` goes
with the phrase before it (an earlier prefix).

Call `reset()` when a turn starts, ends or is cleared.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace

import numpy as np

from koe.audio.pcm import ENGINE_RATE, Pcm
from koe.engines.base import Transcript
from koe.languages import has_cjk
from koe.voice.speculation import Speculation

MIN_PREFIX_S = 2.0
"""Whisper is less sure of short audio: a prefix shorter than this is transcribed again with the rest. At 1 s, a
Chinese test turn ("今天天气怎么样", 1.9 s) was split after 1.27 s, and multilingual base wrote that prefix as
"紧疼疼气" at 7 of 10 starts 2.5 ms apart, where the whole turn came out right at all 10."""
MIN_TAIL_S = 0.3
"""A shorter tail (a breath after the last phrase) is transcribed with the phrase before it."""
MAX_PREFIXES = 4


class Heard:
    def __init__(self, stt: Callable[[Pcm, str | None], Awaitable[Transcript]]) -> None:
        self._stt = stt
        """Transcribes audio; its second argument, when not None, is the language the prefix was heard in."""
        self._prefixes: list[Speculation] = []
        """The turn's pauses the caller spoke on after, oldest first."""

    def reset(self) -> None:
        self._prefixes = []

    def keep(self, speculation: Speculation) -> None:
        """The caller went on after the pause `speculation` transcribed: its audio is a heard prefix of the turn."""
        if speculation.audio.size >= MIN_PREFIX_S * ENGINE_RATE:
            self._prefixes.append(speculation)
            del self._prefixes[:-MAX_PREFIXES]

    def _prefix_for(self, audio: Pcm) -> Speculation | None:
        """The latest heard prefix of `audio` that leaves a tail long enough to transcribe on its own."""
        for prefix in reversed(self._prefixes):
            if audio.size - prefix.audio.size >= MIN_TAIL_S * ENGINE_RATE and prefix.covers(audio):
                return prefix
        return None

    async def transcribe(self, audio: Pcm) -> Transcript:
        """`audio` (the turn so far) transcribed, reusing a heard prefix's transcript where one applies."""
        prefix = self._prefix_for(audio)
        if prefix is None:
            return await self._stt(audio, None)
        tail = audio[prefix.audio.size :]
        before = await prefix.transcript()
        if before is None or not before.text.strip():
            return await self._stt(audio, None)
        # No prompt from the prefix: with "…a table for" as its prompt, tiny.en once moved the tail's first word to
        # its end ("people tonight at eight. Four"). The tail is heard in the prefix's language: where the language
        # is detected, a short tail alone is easily taken for another one ("怎么样", 0.68 s: Japanese).
        after = await self._stt(np.ascontiguousarray(tail), before.language)
        return replace(
            after,
            text=_joined(before.text, after.text),
            words=(),
            segments=(),
            duration_s=before.duration_s + after.duration_s,
            elapsed_s=after.elapsed_s,
        )


def _joined(before: str, after: str) -> str:
    before, after = before.strip(), after.strip()
    if not after:
        return before
    if has_cjk(before[-1:]) or has_cjk(after[:1]):
        return before + after
    return f"{before} {after}"
