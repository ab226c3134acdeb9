"""`koe bench speech`: how well and how fast each Whisper model hears English, Japanese and Chinese.

Call `run_speech_bench(settings, runs, clips, progress)`. The speech is the fixtures: the shared English clips and
the Japanese and Chinese Kokoro clips (tests/fixtures/audio), each heard three ways: clean; telephone-band (down to
8 kHz, a G.711 µ-law round trip, back up to 16 kHz); and under babble at 5 dB SNR (four other fixture clips mixed,
looped to length: deterministic). Each model (tiny.en for English, multilingual base for all three, base at beam 5
for the languages its target is about) transcribes every clip on both decoding paths side by side, the fast path
and the padded 30 s call, with the language given and detected (`auto`). Reported per model, path and condition:
WER (English) or CER (Japanese, Chinese), the final transcript's latency and real-time factor, the first partial's
latency (the first 700 ms of a clip, as a session's first partial sees it), how often the fast path cut a loop or
handed a segment to the padded call, detection accuracy, and resident memory as each model loads. Then the fast
path's decoder on the encoder's threads against one thread (`stt.decode_threads`), each model's clean clips run
alternately. Timings are the median of `runs` runs after a warm-up, on `stt.threads` threads (2 by default).
`--fast-only` skips the padded calls and beam 5, for a quick comparison of two trees or settings.
"""

from __future__ import annotations

import json
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from koe.audio.files import read_audio
from koe.audio.g711 import ulaw_decode, ulaw_encode
from koe.audio.pcm import ENGINE_RATE, Pcm
from koe.audio.resample import resample
from koe.bench.engines import _rss_mb, machine_info
from koe.bench.fixtures import AUDIO, LANGUAGE_AUDIO
from koe.bench.scoring import cer, wer
from koe.config import Settings
from koe.engines.base import Transcript

if TYPE_CHECKING:
    from koe.engines.stt_whisper import WhisperSTT

Progress = Callable[[str], None]

ENGLISH = ("utterance", "short", "reply")
BABBLE_SNR_DB = 5.0
BABBLE_VOICES = 4
TELEPHONE_RATE = 8000
FIRST_PARTIAL_S = 0.7
"""A session's first partial transcript covers about this much speech (`PARTIAL_INTERVAL_MS`)."""
TARGET_CER = 0.08
CONDITIONS = ("clean", "telephone", "babble")


@dataclass(frozen=True, slots=True, eq=False)
class Clip:
    name: str
    language: str
    text: str
    pcm: Pcm


def run_speech_bench(
    settings: Settings,
    runs: int = 3,
    clips: int | None = None,
    progress: Progress | None = None,
    *,
    fast_only: bool = False,
) -> dict[str, Any]:
    """`fast_only`: only the fast path, at the configured beam (a quick run, to compare two trees or settings)."""
    from koe.engines.stt_whisper import WhisperSTT, multilingual_model_dir

    say = progress or (lambda _message: None)
    runs = max(1, runs)
    s = settings.stt
    fixtures = load_clips(clips)
    heard = {condition: [_condition(clip, condition, fixtures) for clip in fixtures] for condition in CONDITIONS}
    result: dict[str, Any] = {
        "machine": machine_info(),
        "runs": runs,
        "clips_per_language": clips,
        "paths": ["fast"] if fast_only else ["fast", "padded"],
        "threads": s.threads,
        "decode_threads": s.decode_threads or s.threads,
        "clips": {lang: [c.name for c in fixtures if c.language == lang] for lang in ("en", "ja", "zh")},
        "conditions": {
            "clean": "16 kHz as synthesised",
            "telephone": f"16 kHz -> {TELEPHONE_RATE} Hz -> G.711 mu-law -> 16 kHz",
            "babble": f"{BABBLE_VOICES} other fixture clips mixed, at {BABBLE_SNR_DB:g} dB SNR",
        },
        "memory_mb": {"before_models": _rss_mb()},
        "models": {},
    }
    say(
        f"{len(fixtures)} clips x {len(CONDITIONS)} conditions, {runs} timed run(s) each, {s.threads} threads "
        f"({s.decode_threads or s.threads} decoding)"
    )
    options: dict[str, Any] = {
        "compute_type": s.compute_type,
        "threads": s.threads,
        "decode_threads": s.decode_threads,
        "cache_dir": s.cache_dir,
    }
    english = WhisperSTT.load(s.model_path, beam_size=s.beam_size, multilingual=False, **options)
    english.transcribe_sync(fixtures[0].pcm, language="en")
    result["memory_mb"]["english_model_loaded"] = _rss_mb()
    started = time.perf_counter()
    path = s.multilingual_model_path or multilingual_model_dir(s.cache_dir)  # joined here the first time
    base = WhisperSTT.load(path, beam_size=s.multilingual_beam_size or s.beam_size, language="auto", **options)
    base.transcribe_sync(fixtures[0].pcm, language="ja")
    result["multilingual_load_s"] = round(time.perf_counter() - started, 3)
    result["memory_mb"]["both_models_loaded"] = _rss_mb()
    variants = [
        (_label(english), english, ("en",), False),
        ("base", base, ("en", "ja", "zh"), True),
    ]
    if not fast_only:
        beam5 = WhisperSTT.load(path, beam_size=5, language="auto", **options)
        variants.append(("base_beam5", beam5, ("ja", "zh"), False))
    paths = ("fast",) if fast_only else ("fast", "padded")
    for label, stt, languages, detect in variants:
        say(f"{label}: {', '.join(languages)}")
        result["models"][label] = _bench_model(stt, heard, languages, detect, runs, say, paths)
        stt.pool.shutdown()
    result["decoder_threads"] = {
        "tiny.en": _decoder_threads(s.model_path, ("en",), fixtures, runs, options, s.beam_size, say),
        "base": _decoder_threads(path, ("en", "ja", "zh"), fixtures, runs, options, s.beam_size, say),
    }
    result["memory_mb"]["after_all"] = _rss_mb()
    result["memory_mb"]["peak"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    if not fast_only:
        result["targets"] = _targets(result)
    return result


def load_clips(per_language: int | None = None) -> list[Clip]:
    """The English, Japanese and Chinese fixture clips at 16 kHz; `per_language` keeps the first few of each."""
    texts = json.loads((AUDIO / "texts.json").read_text("utf-8"))
    found = [Clip(f"en_{key}", "en", texts[key], read_audio(AUDIO / f"{key}_16k.wav", ENGINE_RATE)) for key in ENGLISH]
    others = json.loads((LANGUAGE_AUDIO / "texts.json").read_text("utf-8"))
    found += [
        Clip(name, name[:2], text, read_audio(LANGUAGE_AUDIO / f"{name}.wav", ENGINE_RATE))
        for name, text in others.items()
    ]
    if per_language is None:
        return found
    return [clip for lang in ("en", "ja", "zh") for clip in [c for c in found if c.language == lang][:per_language]]


def telephone(pcm: Pcm) -> Pcm:
    """`pcm` as a phone line carries it: 8 kHz, G.711 µ-law, then back to 16 kHz."""
    narrow = resample(pcm, ENGINE_RATE, TELEPHONE_RATE)
    return resample(ulaw_decode(ulaw_encode(narrow)), TELEPHONE_RATE, ENGINE_RATE)


def babble(clip: Clip, pool: list[Clip], snr_db: float = BABBLE_SNR_DB) -> Pcm:
    """`clip` under `BABBLE_VOICES` other clips talking at once, at `snr_db` (powers over the whole clip)."""
    others = [other for other in pool if other.name != clip.name]
    names = [other.name for other in pool]
    start = names.index(clip.name) if clip.name in names else len(clip.text)  # a fixed choice per clip
    noise = np.zeros(clip.pcm.size, dtype=np.float64)
    for k in range(BABBLE_VOICES):
        voice = others[(start + k) % len(others)].pcm.astype(np.float64)
        reps = -(-clip.pcm.size // voice.size) + 1
        looped = np.tile(voice, reps)
        offset = (k * 7919) % voice.size  # each voice starts somewhere else, so the talkers do not align
        noise += looped[offset : offset + clip.pcm.size]
    speech = clip.pcm.astype(np.float64)
    gain = np.sqrt(np.mean(speech**2) / (np.mean(noise**2) * 10 ** (snr_db / 10)))
    mixed: Pcm = np.clip(speech + gain * noise, -32768, 32767).astype(np.int16)
    return mixed


def _condition(clip: Clip, condition: str, pool: list[Clip]) -> Clip:
    if condition == "telephone":
        return Clip(clip.name, clip.language, clip.text, telephone(clip.pcm))
    if condition == "babble":
        return Clip(clip.name, clip.language, clip.text, babble(clip, pool))
    return clip


def _bench_model(
    stt: WhisperSTT,
    heard: dict[str, list[Clip]],
    languages: tuple[str, ...],
    detect: bool,
    runs: int,
    say: Progress,
    paths: tuple[str, ...],
) -> dict[str, Any]:
    figures: dict[str, Any] = {"name": stt.name}
    modes = [("given", False)] + ([("auto", True)] if detect else [])
    for path in paths:
        for condition, clips in heard.items():
            for mode, auto in modes:
                chosen = [clip for clip in clips if clip.language in languages]
                row = _run(stt, chosen, path == "padded", auto, runs)
                figures.setdefault(path, {}).setdefault(condition, {})[mode] = row
                say(f"  {path:6s} {condition:9s} {mode:5s} " + _brief(row))
    return figures


def _run(stt: WhisperSTT, clips: list[Clip], padded: bool, auto: bool, runs: int) -> dict[str, Any]:
    before = (stt.counts.cut, stt.counts.fallback)
    per_language: dict[str, dict[str, list[float]]] = {}
    detected_right = 0
    audio_s = elapsed_s = 0.0
    for clip in clips:
        language = "auto" if auto else clip.language

        def hear(pcm: Pcm, language: str = language) -> Transcript:
            return stt.transcribe_sync(pcm, language=language, padded=padded)

        transcript = hear(clip.pcm)  # the warm-up, and the transcript scored
        times = [_timed(hear, clip.pcm) for _ in range(runs)]
        head = clip.pcm[: round(FIRST_PARTIAL_S * ENGINE_RATE)]
        partial = [_timed(hear, head) for _ in range(runs)]
        score = wer if clip.language == "en" else cer
        row = per_language.setdefault(clip.language, {"error": [], "final_ms": [], "partial_ms": []})
        row["error"].append(score(clip.text, transcript.text))
        row["final_ms"].append(statistics.median(times) * 1000)
        row["partial_ms"].append(statistics.median(partial) * 1000)
        detected_right += transcript.language == clip.language
        audio_s += clip.pcm.size / ENGINE_RATE
        elapsed_s += statistics.median(times)
    result: dict[str, Any] = {
        lang: {
            "wer" if lang == "en" else "cer": round(statistics.mean(row["error"]), 4),
            "final_ms": round(statistics.mean(row["final_ms"]), 1),
            "first_partial_ms": round(statistics.mean(row["partial_ms"]), 1),
        }
        for lang, row in per_language.items()
    }
    result["rtf"] = round(elapsed_s / audio_s, 4) if audio_s else None
    result["loops_cut"] = stt.counts.cut - before[0]
    result["fallbacks"] = stt.counts.fallback - before[1]
    if auto:
        result["detection_accuracy"] = round(detected_right / max(1, len(clips)), 3)
    return result


def _decoder_threads(
    path: Path | None,
    languages: tuple[str, ...],
    fixtures: list[Clip],
    runs: int,
    options: dict[str, Any],
    beam_size: int,
    say: Progress,
) -> dict[str, Any]:
    """The fast path's final latency with the decoder on the encoder's `threads` (one copy of the model) and on
    one thread (a second copy, `stt.decode_threads` 1), the clean clips in `languages` run alternately."""
    from koe.engines.stt_whisper import WhisperSTT

    threads = int(options["threads"])
    loaded = {
        count: WhisperSTT.load(path, beam_size=beam_size, multilingual=False, **{**options, "decode_threads": count})
        for count in sorted({threads, 1}, reverse=True)
    }
    clips = [clip for clip in fixtures if clip.language in languages]
    medians: dict[int, list[float]] = {count: [] for count in loaded}
    for clip in clips:
        elapsed: dict[int, list[float]] = {count: [] for count in loaded}
        for _ in range(runs + 1):  # the first is a warm-up
            for count, stt in loaded.items():
                elapsed[count].append(_timed(partial(stt.transcribe_sync, language=clip.language), clip.pcm))
        for count in loaded:
            medians[count].append(statistics.median(elapsed[count][1:]))
    for stt in loaded.values():
        stt.pool.shutdown()
    found: dict[str, Any] = {
        f"final_ms_decoder_on_{count}": round(statistics.median(values) * 1000, 1) for count, values in medians.items()
    }
    if 1 in medians and threads != 1:
        ratios = [one / many for one, many in zip(medians[1], medians[threads], strict=True)]
        found["ratio_1_to_threads"] = round(statistics.median(ratios), 3)
        found["ratio_per_clip"] = {clip.name: round(r, 3) for clip, r in zip(clips, ratios, strict=True)}
    say(f"decoder threads, {_label(next(iter(loaded.values())))}: {found}")
    return found


def _label(stt: WhisperSTT) -> str:
    return stt.name.removeprefix("faster-whisper:")


def _timed(fn: Callable[[Pcm], object], pcm: Pcm) -> float:
    started = time.perf_counter()
    fn(pcm)
    return time.perf_counter() - started


def _brief(row: dict[str, Any]) -> str:
    parts = []
    for lang in ("en", "ja", "zh"):
        if lang in row:
            metric = "wer" if lang == "en" else "cer"
            parts.append(f"{lang} {metric} {row[lang][metric] * 100:.1f}% {row[lang]['final_ms']:.0f} ms")
    extra = f" detect {row['detection_accuracy'] * 100:.0f}%" if "detection_accuracy" in row else ""
    return f"{', '.join(parts)}; rtf {row['rtf']}; cut {row['loops_cut']} fallback {row['fallbacks']}{extra}"


def _targets(result: dict[str, Any]) -> dict[str, Any]:
    """Issue 12's targets, as measured: CER ≤ 8% on clean ja and zh; English WER unchanged."""
    models = result["models"]
    base = models["base"]["fast"]["clean"]["given"]
    beam5 = models["base_beam5"]["fast"]["clean"]["given"]
    english = next(iter(models.values()))
    found: dict[str, Any] = {}
    for lang in ("ja", "zh"):
        if lang in base:
            best = min(base[lang]["cer"], beam5.get(lang, {}).get("cer", 1.0))
            found[f"cer_clean_{lang}"] = {
                "beam1": base[lang]["cer"],
                "beam5": beam5.get(lang, {}).get("cer"),
                "met": best <= TARGET_CER,
            }
    found["wer_clean_en_fast_vs_padded"] = {
        "fast": english["fast"]["clean"]["given"]["en"]["wer"],
        "padded": english["padded"]["clean"]["given"]["en"]["wer"],
    }
    return found
