"""`koe bench tts`: speech in each language, on this machine. Call `run_tts_bench(settings, runs, languages)`.

For each language (English on Piper, Japanese and Chinese on Kokoro) it measures, on the configured TTS threads:
the first use (the time to first audio of a reply when the language's model and G2P are not loaded yet, and the
resident memory they add), the time to first audio of a reply whose first sentence is cut at its comma against the same
sentence in one call, the real-time factor of the whole reply, and whether two runs give the same samples. Each
figure is the median of `runs` runs after the first use; `languages` and `runs` set the size of the run.
"""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from koe.bench.engines import machine_info
from koe.config import Settings
from koe.engines.tts_router import TTSRouter

Progress = Callable[[str], None]

REPLIES = {
    "en": "Sure, I can help with that, and it will not take long. The nearest pharmacy opens at nine tomorrow.",
    "ja": "本日はお電話ありがとうございます、ご予約の日時とお名前を教えていただけますか。"
    "駅の近くのレストランは夜七時から空いています。",
    "zh": "您好，欢迎致电北京饭店，请问您想预订几点的座位？我们今晚七点以后还有空位。",
}
"""Two or three sentences, the first long with a comma: what a voice agent's reply looks like."""
_COMMAS = str.maketrans({"、": " ", "，": " ", ",": " "})


def run_tts_bench(
    settings: Settings, runs: int = 5, languages: Sequence[str] = ("en", "ja", "zh"), progress: Progress | None = None
) -> dict[str, Any]:
    say = progress or (lambda _message: None)
    s = settings.tts
    started = time.perf_counter()
    tts = TTSRouter.load(s.voice, voices=s.voices, voice_dirs=s.voice_dirs, threads=s.threads)
    result: dict[str, Any] = {
        "machine": machine_info(),
        "runs": max(1, runs),
        "threads": s.threads,
        "engine": tts.name,
        "load_s": round(time.perf_counter() - started, 3),
        "memory_after_load_mb": _rss_mb(),
    }
    say(f"loaded {tts.name} in {result['load_s']} s; {result['memory_after_load_mb']} MB resident")
    result["languages"] = bench_languages(tts, runs, languages, say)
    result["peak_memory_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    tts.pool.shutdown()
    return result


def bench_languages(
    tts: TTSRouter, runs: int, languages: Sequence[str] = ("en", "ja", "zh"), say: Progress | None = None
) -> dict[str, Any]:
    report = say or (lambda _message: None)
    figures: dict[str, Any] = {}
    for language in languages:
        voice = tts.voice_for(language)
        if voice is None:
            figures[language] = {"skipped": f"no installed voice speaks {language}"}
            continue
        figures[language] = _bench_language(tts, voice, REPLIES[language], max(1, runs))
        report(f"tts {language} ({voice}): " + ", ".join(f"{k}={v}" for k, v in figures[language].items()))
    return figures


def _bench_language(tts: TTSRouter, voice: str, text: str, runs: int) -> dict[str, Any]:
    before = _rss_mb()
    first_use, _total, first_samples, _texts = _reply(tts, voice, text)
    after = _rss_mb()
    heads: list[float] = []
    totals: list[float] = []
    samples = first_samples
    for _ in range(runs):
        head, total, samples, chunks = _reply(tts, voice, text)
        heads.append(head)
        totals.append(total)
    audio_s = samples.size / tts.sample_rate(voice)
    # The first sentence without its commas is one call: what the first audio would wait for without the cut.
    sentence = _first_sentence(text).translate(_COMMAS)
    whole = [_reply(tts, voice, sentence)[1] for _ in range(runs)]
    return {
        "voice": voice,
        "first_use_time_to_first_audio_s": round(first_use, 3),
        "memory_added_by_first_use_mb": round(after - before, 1),
        "time_to_first_audio_s": round(statistics.median(heads), 3),
        "first_chunk": chunks[0],
        "first_sentence_in_one_call_s": round(statistics.median(whole), 3),
        "rtf": round(statistics.median(totals) / audio_s, 3),
        "audio_s": round(audio_s, 3),
        "chunks": len(chunks),
        "deterministic": bool(np.array_equal(samples, first_samples)),
    }


def _reply(tts: TTSRouter, voice: str, text: str) -> tuple[float, float, np.ndarray, list[str]]:
    started = time.perf_counter()
    head = 0.0
    pieces: list[np.ndarray] = []
    texts: list[str] = []
    for chunk in tts.synthesize_sync(text, voice):
        if not pieces:
            head = time.perf_counter() - started
        pieces.append(chunk.pcm)
        texts.append(chunk.text)
    return head, time.perf_counter() - started, np.concatenate(pieces), texts


def _first_sentence(text: str) -> str:
    for end, char in enumerate(text):
        if char in "。！？.!?" and (char not in ".!?" or text[end + 1 : end + 2] in ("", " ")):
            return text[: end + 1]
    return text


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return 0.0
