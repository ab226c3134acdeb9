"""End-of-utterance decisions for semantic turn detection, and filler words.

Plain silence timing ends "I'd like to book a table for…" as soon as the speaker draws breath. Semantic turn
detection decides on the transcript of the pause (the speculation's, made as the pause begins): a sentence that is
clearly finished ends the turn after the same silence as `server_vad` (`silence_duration_ms`), one that is
unfinished (no closing punctuation, a trailing comma or "and", "so", "but", "the", "um") waits for more speech up to
the eagerness timeout OpenAI documents (high 2 s, medium and auto 4 s, low 8 s; Voice Live's
`end_of_utterance_detection.timeout_ms` when given). While the transcript is not ready only the timeout may end the
turn; it is ready long before the silence is over (the fast path transcribes a turn in about 70 ms).
`end_wait_for()` gives the input pipeline that rule as a function of the silence so far.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Protocol

from koe.voice.config import TurnDetection

EAGERNESS_TIMEOUTS_MS = {"high": 2000, "medium": 4000, "auto": 4000, "low": 8000}
"""The longest wait after an unfinished utterance (OpenAI's documented maximum timeouts; auto is medium)."""

FILLERS = frozenset("ah ahh uh uhh um umm uhm hm hmm hmmm mm mmm mhm huh oh er erm eh yeah yep uh-huh okay ok".split())
DANGLING = frozenset("and but or so because although though nor the a an um uh uhm er erm".split())
"""Last words that leave an utterance unfinished whatever punctuation Whisper gave it ("And?", "so.")."""
CONTINUATIONS = DANGLING | frozenset(
    """if then than which whose while whether to of for with in on at by from into about my your our their his her
    its like just also very really""".split()
)
"""Last words that leave a statement unfinished ("a table for.") but may end a question ("What is it for?")."""
_WORD = re.compile(r"[a-z0-9'-]+")


class _HasText(Protocol):
    @property
    def text(self) -> str | None: ...


def looks_finished(text: str) -> bool:
    """Whether a transcript reads as a complete utterance: closing punctuation, and no dangling last word."""
    text = text.strip().rstrip("\"'”’)」』）")
    if not text or text.endswith(("...", "…", ",", ";", ":", "-", "—", "、", "，")):
        return False
    if text[-1] not in ".?!。？！":
        return False
    words = _WORD.findall(text.lower())
    if not words:
        return True  # Japanese or Chinese, which closed its sentence
    rule = DANGLING if text[-1] in "?!？！" else CONTINUATIONS
    return words[-1] not in rule


def is_only_fillers(text: str) -> bool:
    return all(word in FILLERS for word in _WORD.findall(text.lower()))


def semantic_waits(config: TurnDetection) -> tuple[int, int]:
    """(the wait after a finished utterance, the longest wait after an unfinished one), in ms."""
    finished = config.silence_duration_ms
    unfinished = config.eou_timeout_ms or EAGERNESS_TIMEOUTS_MS.get(config.eagerness, EAGERNESS_TIMEOUTS_MS["auto"])
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
