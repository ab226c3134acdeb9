"""Word error rate for checking transcripts against the fixture texts."""

from __future__ import annotations

import re

_NUMBER_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen "
    "eighteen nineteen twenty"
).split()
_NUMBERS = {str(value): word for value, word in enumerate(_NUMBER_WORDS)}
"""Whisper writes small numbers as digits or as words, as it likes ("at 11" for "at eleven"): both count the same."""


def normalize(text: str) -> list[str]:
    words = re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()
    return [_NUMBERS.get(word, word) for word in words]


def wer(reference: str, hypothesis: str) -> float:
    ref, hyp = normalize(reference), normalize(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    previous = list(range(len(hyp) + 1))
    for i, ref_word in enumerate(ref, 1):
        current = [i] + [0] * len(hyp)
        for j, hyp_word in enumerate(hyp, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref_word != hyp_word))
        previous = current
    return previous[-1] / len(ref)
