"""End-of-utterance decisions for semantic turn detection, and filler words.

Plain silence timing ends "I'd like to book a table for…" as soon as the speaker draws breath. Semantic turn
detection looks at the speculative transcript of the pause: a sentence that is clearly finished ends the turn after
a short silence, one that is clearly unfinished (no closing punctuation, or a trailing "and", "the", "um") waits up
to a longer timeout. `end_wait_for()` gives the input pipeline that rule as a function of the silence so far.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Protocol

from koe.voice.config import TurnDetection

# (wait after a finished sentence, longest wait after an unfinished one), in ms.
EAGERNESS_WAITS_MS = {"high": (250, 1500), "medium": (400, 3000), "low": (700, 6000)}
MIN_UNFINISHED_WAIT_MS = 2000

FILLERS = frozenset("ah ahh uh uhh um umm uhm hm hmm hmmm mm mmm mhm huh oh er erm eh yeah yep uh-huh okay ok".split())
CONTINUATIONS = frozenset(
    """and but or so because if then than that which who whom whose when where while although though the a an
    to of for with in on at by from into about my your our their his her its this these those is are was were am
    be been i we you they he she it um uh like just also very really""".split()
)
_WORD = re.compile(r"[a-z0-9'-]+")


class _HasText(Protocol):
    @property
    def text(self) -> str | None: ...


def looks_finished(text: str) -> bool:
    """Whether a transcript reads as a complete utterance: closing punctuation, and no dangling last word."""
    text = text.strip()
    if not text or text.endswith(("...", "…", ",", ";", ":", "-", "—")):
        return False
    if text[-1] not in ".?!。？！\"'":
        return False
    words = _WORD.findall(text.lower())
    return bool(words) and words[-1] not in CONTINUATIONS


def is_only_fillers(text: str) -> bool:
    return all(word in FILLERS for word in _WORD.findall(text.lower()))


def semantic_waits(config: TurnDetection) -> tuple[int, int]:
    if config.eagerness in EAGERNESS_WAITS_MS:
        return EAGERNESS_WAITS_MS[config.eagerness]
    finished = config.silence_duration_ms
    unfinished = config.eou_timeout_ms or max(3 * finished, MIN_UNFINISHED_WAIT_MS)
    return finished, max(finished, unfinished)


def end_wait_for(
    config: TurnDetection | None, speculation: Callable[[], _HasText | None]
) -> Callable[[int], int | None]:
    """The pause length that ends the turn, given the silence so far (None: keep waiting)."""
    if config is None:
        return lambda _silence_ms: None
    if config.type != "semantic_vad":
        silence = config.silence_duration_ms
        return lambda _silence_ms: silence
    finished, unfinished = semantic_waits(config)

    def wait(_silence_ms: int) -> int:
        current = speculation()
        text = current.text if current is not None else None
        if text is None:
            return unfinished  # no transcript yet: only the longest wait may end the turn
        return finished if looks_finished(text) else unfinished

    return wait
