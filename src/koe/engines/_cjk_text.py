"""Japanese and Chinese text as Kokoro's G2P needs it: call `normalise(text, language)`, then `speech_chunks()`.

`normalise()` turns what the G2P front ends misread into what they read well: full-width letters and digits
become ASCII (misaki's Mandarin G2P drops full-width letters), clock times and, in Japanese, decimals and percent
signs become words (Open JTalk reads "3.5" as "san go" and drops "%"). Punctuation stays as written: the
full-width marks carry the pauses.

`speech_chunks()` cuts the text into the pieces synthesized one call at a time. Each Kokoro call costs about
0.6 s however short it is, so pieces are sentences; only the first is cut early, at its first comma (、，), so
that the first audio comes after a short clause, and sentences too long for one call are cut at their commas.
Each piece carries the pause that follows it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

FIRST_CHUNK_CHARS = 10
"""A first sentence longer than this is cut at its first comma: it sets the time to first audio."""
MIN_CHUNK_CHARS = 4
"""No piece shorter than this is cut off: a call's fixed cost would buy almost no audio."""
MAX_CHUNK_CHARS = 60
"""Longer sentences are cut at commas: about 120 phonemes, 8 s of speech, well inside the model's 510 tokens."""
SENTENCE_PAUSE_S = 0.25
CLAUSE_PAUSE_S = 0.1

_FULL_WIDTH_ALNUM = re.compile(r"[０-９Ａ-Ｚａ-ｚ\u3000]")
_CLOCK = re.compile(r"(?<![\d:])([01]?\d|2[0-3]):([0-5]\d)(?![\d:])")
_JA_DECIMAL = re.compile(r"(\d)\.(\d)")
_JA_PERCENT = re.compile(r"(\d)\s?[%％]")
_SENTENCE = re.compile(r"(?<=[。！？!?…\n])(?![。！？!?…])[」』）”’\"')]*|(?<=[.])\s+")
_CLAUSE = re.compile(r"(?<=[、，,；;：:])")
_SENTENCE_MARKS = "。！？!?…."


def _ascii(match: re.Match[str]) -> str:
    char = match.group(0)
    return " " if char == "\u3000" else chr(ord(char) - 0xFEE0)


def _clock(language: str) -> Callable[[re.Match[str]], str]:
    hour_word, minute_word = ("時", "分") if language == "ja" else ("点", "分")

    def spoken(match: re.Match[str]) -> str:
        hours, minutes = match.group(1), int(match.group(2))
        return f"{int(hours)}{hour_word}" + (f"{minutes}{minute_word}" if minutes else "")

    return spoken


def normalise(text: str, language: str) -> str:
    """`text` as the `language` ("ja" or "zh") G2P reads it best."""
    text = _FULL_WIDTH_ALNUM.sub(_ascii, text)
    text = _CLOCK.sub(_clock(language), text)
    if language == "ja":
        text = _JA_PERCENT.sub(r"\1パーセント", text)
        text = _JA_DECIMAL.sub(r"\1点\2", text)
    return text


@dataclass(frozen=True, slots=True)
class Chunk:
    text: str
    pause_s: float
    """Silence to follow this piece's speech."""


def _pause(piece: str) -> float:
    end = piece.rstrip("」』）”’\"') \n")[-1:]
    return SENTENCE_PAUSE_S if end and end in _SENTENCE_MARKS else CLAUSE_PAUSE_S


def _sentences(text: str) -> list[str]:
    pieces: list[str] = []
    start = 0
    for match in _SENTENCE.finditer(text):
        pieces.append(text[start : match.end()])
        start = match.end()
    pieces.append(text[start:])
    return [piece.strip() for piece in pieces if piece.strip()]


def _cut_long(sentence: str) -> list[str]:
    """A sentence in pieces of at most MAX_CHUNK_CHARS where commas allow, none shorter than MIN_CHUNK_CHARS."""
    if len(sentence) <= MAX_CHUNK_CHARS:
        return [sentence]
    pieces: list[str] = []
    current = ""
    for clause in _CLAUSE.split(sentence):
        if current and len(current) + len(clause) > MAX_CHUNK_CHARS:
            pieces.append(current)
            current = ""
        current += clause
        while len(current) > MAX_CHUNK_CHARS:  # no comma in reach: cut where the limit falls
            pieces.append(current[:MAX_CHUNK_CHARS])
            current = current[MAX_CHUNK_CHARS:]
    if current:
        if pieces and len(current) < MIN_CHUNK_CHARS:
            pieces[-1] += current
        else:
            pieces.append(current)
    return [piece.strip() for piece in pieces if piece.strip()]


def _cut_first(sentence: str) -> list[str]:
    """The first sentence, cut after its first comma when it is long and the comma leaves enough on each side."""
    if len(sentence) <= FIRST_CHUNK_CHARS:
        return [sentence]
    for match in _CLAUSE.finditer(sentence):
        head, rest = sentence[: match.end()], sentence[match.end() :]
        if len(head) >= MIN_CHUNK_CHARS and len(rest.strip()) >= MIN_CHUNK_CHARS:
            return [head.strip(), *_cut_long(rest.strip())]
    return _cut_long(sentence)


def speech_chunks(text: str) -> list[Chunk]:
    """The pieces of `text` to synthesize one call each, in order, with the pause after each."""
    pieces: list[str] = []
    for index, sentence in enumerate(_sentences(text)):
        pieces.extend(_cut_first(sentence) if index == 0 else _cut_long(sentence))
    return [Chunk(piece, _pause(piece)) for piece in pieces]
