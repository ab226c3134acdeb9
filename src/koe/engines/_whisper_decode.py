"""One loaded Whisper model (faster-whisper on CTranslate2) and its two ways of decoding a segment.

Call `WhisperDecoder.decode(audio, code, prompt, words)`. Whisper was trained on 30 s windows, and faster-whisper's
`transcribe()` pads every segment to one: a 3 s utterance pays the encoder for 30 s. CTranslate2 also accepts a
shorter mel, so the fast path (`_fast`) encodes the segment's own frames plus at least `PAD_FRAMES` of zeros *in
feature space*, to a whole `FRAME_BUCKET` (the padding `transcribe()` itself adds after the audio; silent audio
instead of zeros makes the decoder loop), and calls the model's `generate()` directly. Measured on the fixtures
(2 threads, `koe bench speech`): tiny.en in about 0.28x the time of the padded call, multilingual base in about 0.24x
its own, at the same error rates.

A shortened window has one failure mode: the decoder, having read everything, starts over from the beginning
("… this weekend? What is the") or repeats one word, until something stops it. So the fast path bounds its output
(`TOKENS_PER_S` per second of audio plus `EXTRA_TOKENS`). An output that reached the bound repeating itself was
looping: the guard cuts the restart or the sentence said twice (`_restart`, `_dedupe`), and the text before it is
the transcript (about a quarter of tiny.en's fast decodes on 33 English clips, a tenth of base's on 41). Everything
else goes to the padded call: an output that reached the bound without repeating itself, one that stopped by itself
but repeats (the caller may have said it twice: only the padded call can tell), a segment too long for the window,
and word timings (the alignment heads expect the 30 s window).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from koe.audio.pcm import ENGINE_RATE
from koe.engines.base import Segment, Word
from koe.languages import SENTENCE_END, WHISPER_LANGUAGES

WINDOW_FRAMES = 3000
"""Whisper's 30 s window in mel frames (10 ms each): the longest input its encoder accepts."""
PAD_FRAMES = 200
"""Zero frames after the audio on the fast path. 50 is the least that works; below about 100 the decoder still cut
short or restarted on several of 27 English clips, 200 matched the padded call and costs little (encoder time grows
with frames, and the decoder dominates)."""
FRAME_BUCKET = 100
"""The fast path's mel length is rounded up to a multiple of this (1 s), with more zero frames. CTranslate2's oneDNN
kernels are built and cached per input shape (its primitive cache keeps 1,024): a length per utterance grew a
server by about 1 MB per new length (`koe bench soak`: 170 to 350 MB over 160 lengths); 29 lengths stay bounded."""
TOKENS_PER_S = 8
"""The fast path's output bound: speech runs at 3-6 tokens a second in English, Japanese and Chinese."""
EXTRA_TOKENS = 8
MAX_PROMPT_TOKENS = 100
# Whisper's standard silence test: both a high no-speech probability and a low average log-probability.
NO_SPEECH_PROB = 0.6
LOW_LOGPROB = -1.0
RESTART_MIN_UNITS = 3
"""A restart not at the output bound must repeat at least this many words (or CJK characters), after a sentence end:
a real "bye bye" stays."""

INAUDIBLE_PEAK = 10 ** (-60 / 20)
"""Audio whose loudest sample is below -60 dBFS (about 33 in PCM16) holds no speech, and is not decoded: on digital
silence Whisper's own no-speech test is marginal (multilingual base gave "ん" and "ステップ" for zeros on an AMD
EPYC, no-speech probability 0.60-0.64 against the 0.6 bar, and nothing on an Intel Xeon). Speech, even quiet speech
on a telephone line, peaks far above it."""

DecodePath = Literal["fast", "padded", "fallback"]


@dataclass(frozen=True, slots=True)
class Decoded:
    text: str
    language: str
    path: DecodePath
    """Which call produced it: the fast path, the padded call, or the padded call after the fast path gave up."""
    segments: tuple[Segment, ...] = ()
    words: tuple[Word, ...] = ()


@dataclass
class DecodeCounts:
    fast: int = 0
    padded: int = 0
    fallback: int = 0
    cut: int = 0
    """Fast-path outputs whose restart or repeated sentence was cut."""


@dataclass
class WhisperDecoder:
    model: Any
    """A `faster_whisper.WhisperModel`."""
    path: Path
    beam_size: int
    fast_path: bool = True
    languages: frozenset[str] = frozenset({"en"})
    """What it can transcribe (Whisper's codes)."""
    generator: Any = None
    """The `ctranslate2.models.Whisper` the fast path decodes (and detects languages) with, once `encode()` is
    done: a second copy of the model on fewer threads (`stt.decode_threads`), or None for the model's own."""
    counts: DecodeCounts = field(default_factory=DecodeCounts)
    _tokenizers: dict[str | None, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def _generator(self) -> Any:
        return self.model.model if self.generator is None else self.generator

    @property
    def multilingual(self) -> bool:
        return bool(self.model.model.is_multilingual)

    def decode(
        self,
        audio: npt.NDArray[np.float32],
        code: str | None,
        prompt: str | None,
        *,
        words: bool = False,
        allowed: frozenset[str] | None = None,
        padded: bool = False,
    ) -> Decoded:
        """Transcribe 16 kHz float audio in language `code` (None: detect it, among `allowed` when given). `padded`
        forces the padded call (the benchmarks compare the two)."""
        if inaudible(audio):
            return Decoded("", _unheard_language(code, allowed), "padded" if padded else "fast")
        fast_ok = self.fast_eligible(audio.size, words=words, padded=padded)
        if fast_ok:
            decoded = self._fast([audio], [code], prompt, allowed)[0]
            if decoded is not None:
                self.counts.fast += 1
                return decoded
            self.counts.fallback += 1
        else:
            self.counts.padded += 1
        return self._padded(audio, code, prompt, words, allowed, "fallback" if fast_ok else "padded")

    def fast_eligible(self, samples: int, *, words: bool = False, padded: bool = False) -> bool:
        """Whether a segment of `samples` takes the fast path (it may still fall back to the padded call)."""
        return self.fast_path and not (words or padded) and _frames(samples) + PAD_FRAMES <= WINDOW_FRAMES

    def decode_many(
        self,
        audios: list[npt.NDArray[np.float32]],
        codes: list[str | None],
        *,
        allowed: frozenset[str] | None = None,
    ) -> list[Decoded]:
        """Several segments (each `fast_eligible`, none with a prompt) decoded together, as `decode()` would each:
        one encoder and one decoder call for all of them, since CTranslate2 takes batches; a segment the fast path
        gives up on then gets the padded call of its own."""
        heard = [index for index, audio in enumerate(audios) if not inaudible(audio)]
        found = [Decoded("", _unheard_language(code, allowed), "fast") for code in codes]
        if heard:
            decoded = self._decode_many([audios[i] for i in heard], [codes[i] for i in heard], allowed)
            for index, one in zip(heard, decoded, strict=True):
                found[index] = one
        return found

    def _decode_many(
        self, audios: list[npt.NDArray[np.float32]], codes: list[str | None], allowed: frozenset[str] | None
    ) -> list[Decoded]:
        found: list[Decoded] = []
        for audio, code, decoded in zip(audios, codes, self._fast(audios, codes, None, allowed), strict=True):
            if decoded is not None:
                self.counts.fast += 1
                found.append(decoded)
            else:
                self.counts.fallback += 1
                found.append(self._padded(audio, code, None, False, allowed, "fallback"))
        return found

    def _fast(
        self,
        audios: list[npt.NDArray[np.float32]],
        codes: list[str | None],
        prompt: str | None,
        allowed: frozenset[str] | None,
    ) -> list[Decoded | None]:
        """The fast path for a batch: each segment's own frames, zeros to the longest one's plus `PAD_FRAMES` (more
        zeros only bring a window nearer the padded call's), then each output judged on its own bound."""
        import ctranslate2

        features = [self.model.feature_extractor(audio) for audio in audios]
        frames = [min(f.shape[1], _frames(audio.size)) for f, audio in zip(features, audios, strict=True)]
        batch = np.zeros((len(audios), features[0].shape[0], fast_frames(max(frames))), dtype=np.float32)
        for index, (feature, count) in enumerate(zip(features, frames, strict=True)):
            batch[index, :, :count] = feature[:, :count]
        encoded = self.model.model.encode(ctranslate2.StorageView.from_array(batch), to_cpu=False)
        if any(code is None for code in codes):
            detected = self._detect(encoded, allowed)
            known = [code or found for code, found in zip(codes, detected, strict=True)]
        else:
            known = [code for code in codes if code is not None]
        tokenizers = [self._tokenizer(code) for code in known]
        starts = [[*tokenizer.sot_sequence, tokenizer.no_timestamps] for tokenizer in tokenizers]
        if prompt:  # a single segment's (batches have none, so every start has the same length)
            tokenizer = tokenizers[0]
            starts = [[tokenizer.sot_prev, *tokenizer.encode(" " + prompt.strip())[-MAX_PROMPT_TOKENS:], *starts[0]]]
        budgets = [int(audio.size / ENGINE_RATE * TOKENS_PER_S) + EXTRA_TOKENS for audio in audios]
        results = self._generator.generate(
            encoded,
            starts,
            beam_size=self.beam_size,
            # CTranslate2 4.8 stops Whisper at max_length // 2 new tokens; asking for twice the budget and cutting
            # to it below holds either way. A batch runs to its longest budget; each output is cut to its own.
            max_length=2 * max(budgets),
            suppress_blank=True,
            suppress_tokens=self._suppressed(tokenizers[0]),  # the model's, whatever the language
            return_no_speech_prob=True,
            return_scores=True,
        )
        return [
            self._judged(result, tokenizer, code, budget)
            for result, tokenizer, code, budget in zip(results, tokenizers, known, budgets, strict=True)
        ]

    def _judged(self, result: Any, tokenizer: Any, code: str, budget: int) -> Decoded | None:
        """One fast-path output as a transcript, or None when only the padded call can tell (see the module)."""
        generated = list(result.sequences_ids[0])
        tokens = [token for token in generated if token < tokenizer.eot][:budget]
        # CTranslate2's score is the log-probability over the length (length_penalty 1); faster-whisper's average
        # (what the padded call tests) divides the sum by one more, for the end token.
        average_logprob = result.scores[0] * len(generated) / (len(generated) + 1)
        if result.no_speech_prob > NO_SPEECH_PROB and average_logprob < LOW_LOGPROB:
            return Decoded("", code, "fast")
        text = str(tokenizer.decode(tokens)).rstrip("\ufffd")  # a cut can split a character's bytes
        kept = _dedupe(_restart(text, capped=len(generated) >= budget))
        if len(generated) < budget:
            # It stopped by itself. A repeat could be the decoder's restart or the caller's own words: only the
            # padded call can tell.
            return Decoded(text.strip(), code, "fast") if kept == text else None
        if kept == text:
            return None  # it ran to the bound without repeating itself: a loop of some other kind
        self.counts.cut += 1  # it ran to the bound repeating itself: it was looping, and the text before is whole
        return Decoded(kept.strip(), code, "fast")

    def _padded(
        self,
        audio: npt.NDArray[np.float32],
        code: str | None,
        prompt: str | None,
        words: bool,
        allowed: frozenset[str] | None,
        path: DecodePath,
    ) -> Decoded:
        if code is None and allowed and self.multilingual:
            code = self._detect_padded(audio, allowed)
        segments, info = self.model.transcribe(
            audio,
            language=code if self.multilingual else None,
            beam_size=self.beam_size,
            temperature=0.0,
            word_timestamps=words,
            without_timestamps=not words,
            condition_on_previous_text=False,
            initial_prompt=prompt or None,
            vad_filter=False,
        )
        texts: list[str] = []
        found: list[Word] = []
        kept: list[Segment] = []
        for segment in segments:
            if segment.no_speech_prob > NO_SPEECH_PROB and segment.avg_logprob < LOW_LOGPROB:
                continue  # Whisper's own "this was not speech" signal: dropping it avoids hallucinated text
            texts.append(segment.text)
            kept.append(
                Segment(
                    float(segment.start),
                    float(segment.end),
                    segment.text.strip(),
                    int(segment.seek),
                    tuple(segment.tokens),
                    float(segment.temperature or 0.0),
                    float(segment.avg_logprob),
                    float(segment.compression_ratio),
                    float(segment.no_speech_prob),
                )
            )
            for word in segment.words or ():
                found.append(Word(word.word.strip(), float(word.start), float(word.end), float(word.probability)))
        # faster-whisper keeps each segment's leading space
        return Decoded("".join(texts).strip(), str(info.language), path, tuple(kept), tuple(found))

    def _detect(self, encoded: Any, allowed: frozenset[str] | None) -> list[str]:
        """The most probable language of each encoded segment, among `allowed` when given."""
        if not self.multilingual:
            return ["en"] * encoded.shape[0]
        return [_likeliest(ranked, allowed) for ranked in self._generator.detect_language(encoded)]

    def _detect_padded(self, audio: npt.NDArray[np.float32], allowed: frozenset[str]) -> str:
        _code, _probability, ranked = self.model.detect_language(audio)
        return next((str(code) for code, _p in ranked if code in allowed), "en")

    def _tokenizer(self, code: str | None) -> Any:
        from faster_whisper.tokenizer import Tokenizer

        key = code if self.multilingual else None
        with self._lock:
            tokenizer = self._tokenizers.get(key)
            if tokenizer is None:
                tokenizer = Tokenizer(self.model.hf_tokenizer, self.multilingual, task="transcribe", language=key)
                self._tokenizers[key] = tokenizer
        return tokenizer

    def _suppressed(self, tokenizer: Any) -> list[int]:
        found: list[int] = sorted(
            {
                *tokenizer.non_speech_tokens,  # cached on the tokenizer
                tokenizer.transcribe,
                tokenizer.translate,
                tokenizer.sot,
                tokenizer.sot_prev,
                tokenizer.sot_lm,
            }
        )
        return found


def _likeliest(ranked: list[tuple[str, float]], allowed: frozenset[str] | None) -> str:
    for token, _probability in ranked:
        code = str(token)[2:-2]  # "<|ja|>"
        if code in WHISPER_LANGUAGES and (not allowed or code in allowed):
            return code
    return "en"


def fast_frames(frames: int) -> int:
    """The fast path's encoder input for `frames` of audio: at least `PAD_FRAMES` zeros after them, the total rounded
    up to `FRAME_BUCKET` and at most Whisper's window."""
    return min(WINDOW_FRAMES, -(-(frames + PAD_FRAMES) // FRAME_BUCKET) * FRAME_BUCKET)


def _frames(samples: int) -> int:
    """Mel frames for `samples`, even: the encoder halves the frame count."""
    frames = samples // (ENGINE_RATE // 100)
    return frames + frames % 2


# --- the repetition guard ----------------------------------------------------------------------------------

_UNIT = re.compile(r"[^\W_]+(?:'[^\W_]+)*")
_IDEOGRAPHIC = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]")


def _units(text: str) -> list[tuple[str, int, int]]:
    """Words (lower case) and single CJK characters, with their spans: what a repetition is counted in."""
    found: list[tuple[str, int, int]] = []
    for match in _UNIT.finditer(text):
        word = match.group()
        if _IDEOGRAPHIC.search(word):
            found.extend((char, match.start() + k, match.start() + k + 1) for k, char in enumerate(word))
        else:
            found.append((word.lower(), match.start(), match.end()))
    return found


def _restart(text: str, capped: bool) -> str:
    """`text` cut where it starts over from its own beginning. At the output bound any restart counts (the decoder
    was looping); before it, only one of `RESTART_MIN_UNITS` or more units that follows a sentence end. A sentence
    that opens with the text's first `RESTART_MIN_UNITS` units again is a restart too, even where it then strays
    ("… Paris. Paris. The capital of France." after "The capital of France is Paris", heard in a 2 s reply)."""
    units = _units(text)
    keys = [unit[0] for unit in units]
    opening = keys[:RESTART_MIN_UNITS]
    for index in range(1 if capped else RESTART_MIN_UNITS, len(keys)):
        tail = len(keys) - index
        after_sentence = any(char in SENTENCE_END for char in text[units[index - 1][2] : units[index][1]])
        if keys[index:] == keys[:tail]:
            if capped or (tail >= RESTART_MIN_UNITS and after_sentence):
                return text[: units[index][1]].rstrip()
        elif after_sentence and index >= RESTART_MIN_UNITS and keys[index : index + len(opening)] == opening:
            return text[: units[index][1]].rstrip()
    return text


_SENTENCE = re.compile(f"[^{re.escape(SENTENCE_END)}]+[{re.escape(SENTENCE_END)}]*")


def _dedupe(text: str) -> str:
    """`text` without a sentence that repeats the one before it word for word ("No. No." → "No.")."""
    kept: list[str] = []
    previous: list[str] | None = None
    for match in _SENTENCE.finditer(text):
        keys = [unit[0] for unit in _units(match.group())]
        if keys and keys == previous:
            continue
        kept.append(match.group())
        previous = keys or previous
    return "".join(kept).rstrip() if kept else text


def inaudible(audio: npt.NDArray[np.float32]) -> bool:
    """Whether 16 kHz float audio is too quiet to hold speech (`INAUDIBLE_PEAK`)."""
    return audio.size == 0 or float(np.max(np.abs(audio))) < INAUDIBLE_PEAK


def _unheard_language(code: str | None, allowed: frozenset[str] | None) -> str:
    """The language of a transcript of silence: the one asked for; when detecting, English if it may be, else the
    first allowed (there is nothing to detect it from)."""
    if code is not None:
        return code
    if not allowed or "en" in allowed:
        return "en"
    return sorted(allowed)[0]
