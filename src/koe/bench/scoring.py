"""Word and character error rates, for transcripts against the fixture texts: `wer()` for English, `cer()` for
Japanese and Chinese (written without spaces, so characters are what is counted).

Both normalise what a recogniser may write either way and a listener would not hear: case and punctuation, small
numbers as digits or words ("at 11" for "at eleven"), full-width or half-width forms. `cer()` compares the
characters only: Chinese in the wrong script counts as wrong (check the script on purpose, not by accident).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

_NUMBER_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen "
    "eighteen nineteen twenty"
).split()
_NUMBERS = {str(value): word for value, word in enumerate(_NUMBER_WORDS)}


def normalize(text: str) -> list[str]:
    """English words, lower case, without punctuation; small numbers as words."""
    words = re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()
    return [_NUMBERS.get(word, word) for word in words]


def characters(text: str) -> list[str]:
    """The letters and digits of `text` (NFKC: full-width forms as their plain ones), without punctuation or spaces."""
    return [char for char in unicodedata.normalize("NFKC", text).lower() if unicodedata.category(char)[0] in "LN"]


def wer(reference: str, hypothesis: str) -> float:
    return _error_rate(normalize(reference), normalize(hypothesis))


def cer(reference: str, hypothesis: str) -> float:
    return _error_rate(characters(reference), characters(hypothesis))


def _error_rate(ref: Sequence[str], hyp: Sequence[str]) -> float:
    """Levenshtein distance over the reference's length."""
    if not ref:
        return 0.0 if not hyp else 1.0
    previous = list(range(len(hyp) + 1))
    for i, ref_unit in enumerate(ref, 1):
        current = [i] + [0] * len(hyp)
        for j, hyp_unit in enumerate(hyp, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref_unit != hyp_unit))
        previous = current
    return previous[-1] / len(ref)
