"""The `koe` command: `serve`, `tls init`, `config show`, `transcribe`, `say`, `chat` and `bench …`.

Every subcommand reads the same configuration (`--config FILE`, `KOE_*` variables) and lets flags override it.
Errors end with a one-line message saying what went wrong and what to do, and exit status 1 (2 for usage errors).
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from koe.config import ConfigError, Settings, load_settings, masked_dump, to_toml

if TYPE_CHECKING:  # the commands import the engines only when they run, to keep `koe --help` fast
    from koe.engines.registry import EngineKind, Engines

CONFIG_OPTION = click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="TOML config file (default: $KOE_CONFIG, then ./koe.toml if present).",
)


def _settings(config_file: Path | None, overrides: dict[str, Any] | None = None) -> Settings:
    try:
        return load_settings(config_file, overrides)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


def _progress(message: str) -> None:
    click.echo(f"koe: {message}", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="koe")
def main() -> None:
    """koe (声): a real-time voice streaming gateway on local models."""


@main.command()
@CONFIG_OPTION
@click.option("--host", default=None, help="Address to listen on (default from config: 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port to listen on (default from config: 8000).")
@click.option(
    "--public",
    is_flag=True,
    default=None,
    help="Listen on all interfaces (unless a host is given) and refuse to start while any door takes clients "
    "without credentials (see docs/operations.md).",
)
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default=None)
@click.option(
    "--tls",
    is_flag=True,
    default=None,
    help="Serve TLS on every listener, with the local CA's certificate (koe tls init) unless server.tls_cert_file "
    "and server.tls_key_file name others.",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Processes sharing the ports (SO_REUSEPORT), each with its own models and, without cluster.redis_url, its "
    "own calls (docs/cluster.md, Workers).",
)
def serve(
    config_file: Path | None,
    host: str | None,
    port: int | None,
    public: bool | None,
    log_level: str | None,
    tls: bool | None,
    workers: int,
) -> None:
    """Load the engines and serve every door on one port."""
    given = {"host": host, "port": port, "public": public, "log_level": log_level, "tls": tls}
    server = {k: v for k, v in given.items() if v}
    settings = _settings(config_file, {"server": server} if server else None)
    if workers > 1:
        from koe.server.workers import run_workers

        sys.exit(run_workers(settings, workers, progress=_progress))
    from koe.server.run import run_server

    sys.exit(run_server(settings, progress=_progress))


@main.group()
def tls() -> None:
    """The local certificate authority that `koe serve --tls` and the ACS emulator serve with."""


@tls.command("init")
@CONFIG_OPTION
@click.option(
    "--dir",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where to keep the CA and certificate (default: server.tls_dir, else ~/.local/share/koe/tls).",
)
def tls_init(config_file: Path | None, folder: Path | None) -> None:
    """Make a local CA and a certificate it signs for 127.0.0.1, ::1 and localhost, once (kept while valid), and
    print the lines a client needs to trust it."""
    from koe.net.tls import ensure_local_tls

    where = folder or _settings(config_file).server.tls_dir
    try:
        files, made = ensure_local_tls(where)
    except OSError as exc:
        raise click.ClickException(f"cannot write the local CA in {where or 'the data directory'}: {exc}") from exc
    _progress(f"{'made' if made else 'kept'} the local CA {files.ca_cert} and the certificate {files.cert}")
    for line in files.client_lines():
        click.echo(line)


@main.group()
def config() -> None:
    """Inspect the configuration."""


@config.command("show")
@CONFIG_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of TOML.")
def config_show(config_file: Path | None, as_json: bool) -> None:
    """Print the effective configuration, with secrets masked."""
    data = masked_dump(_settings(config_file))
    click.echo(json.dumps(data, indent=2) if as_json else to_toml(data), nl=as_json)


@main.command()
@CONFIG_OPTION
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON with word timings.")
@click.option("--language", default=None, help="A language tag (ja-JP, zh-TW, en) or auto; default: stt.language.")
def transcribe(config_file: Path | None, files: tuple[Path, ...], as_json: bool, language: str | None) -> None:
    """Transcribe audio files (WAV, Ogg/Opus, MP3, anything PyAV reads)."""
    from koe.audio.files import read_audio
    from koe.audio.pcm import ENGINE_RATE, AudioFormatError
    from koe.engines.base import EngineError
    from koe.engines.stt_whisper import WhisperSTT

    stt = _load(config_file, "stt").require("stt")
    assert isinstance(stt, WhisperSTT)
    failed = False
    for path in files:
        try:
            pcm = read_audio(path, ENGINE_RATE)
            result = stt.transcribe_sync(pcm, language=language, words=as_json)
        except (AudioFormatError, EngineError) as exc:
            click.echo(f"koe: {path}: {exc}", err=True)
            failed = True
            continue
        if as_json:
            words = [
                {
                    "word": w.text,
                    "start": round(w.start_s, 3),
                    "end": round(w.end_s, 3),
                    "probability": round(w.probability, 3),
                }
                for w in result.words
            ]
            record = {"file": str(path), "text": result.text, "duration_s": round(result.duration_s, 3)}
            click.echo(json.dumps({**record, "language": result.language, "words": words}, ensure_ascii=False))
        else:
            click.echo(result.text if len(files) == 1 else f"{path}: {result.text}")
    if failed:
        sys.exit(1)


@main.command()
@CONFIG_OPTION
@click.argument("text", required=False)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="WAV file to write.")
@click.option("--voice", default=None, help="Installed voice name (see --list-voices).")
@click.option("--language", default=None, help="Speak with the voice configured for this language (ja, zh-CN, …).")
@click.option("--list-voices", is_flag=True, help="List installed voices and exit.")
def say(
    config_file: Path | None,
    text: str | None,
    output: Path | None,
    voice: str | None,
    language: str | None,
    list_voices: bool,
) -> None:
    """Synthesize speech to a WAV file."""
    import numpy as np

    from koe.audio.files import write_wav
    from koe.engines.base import EngineError
    from koe.engines.tts_router import TTSRouter

    tts = _load(config_file, "tts").require("tts")
    assert isinstance(tts, TTSRouter)
    if list_voices:
        for name in tts.voices():
            info = tts.voice_info(name)
            gender = f", {info.gender}" if info.gender else ""
            default = ", default" if name == tts.default_voice else ""
            click.echo(f"{name} ({info.language}{gender}, {info.backend}{default})")
        return
    if not text or output is None:
        raise click.UsageError('give the text and an output file: koe say "Hello" -o hello.wav')
    if voice is None and language is not None:
        voice = tts.voice_for(language)
        if voice is None:
            raise click.ClickException(f"no installed voice speaks {language!r}")
    try:
        chunks = list(tts.synthesize_sync(text, voice))
        rate = chunks[0].rate if chunks else tts.sample_rate(voice)
    except EngineError as exc:
        raise click.ClickException(str(exc)) from exc
    pcm = np.concatenate([c.pcm for c in chunks]) if chunks else np.zeros(0, dtype=np.int16)
    write_wav(output, pcm, rate)
    click.echo(f"koe: wrote {output} ({pcm.size / rate:.2f} s at {rate} Hz)", err=True)


@main.command()
@CONFIG_OPTION
@click.argument("question")
@click.option("--system", "system_prompt", default=None, help="System prompt (default from config).")
def chat(config_file: Path | None, question: str, system_prompt: str | None) -> None:
    """Ask the configured LLM (embedded or remote) a question; the answer streams to stdout."""
    from koe.engines.base import LLM, ChatMessage, ChatRequest, EngineError, Finished, TextDelta, ToolCall

    settings = _settings(config_file)
    llm = _load(config_file, "llm").require("llm")

    async def ask(model: LLM) -> None:
        request = ChatRequest(
            [
                ChatMessage("system", system_prompt or settings.llm.system_prompt),
                ChatMessage("user", question),
            ]
        )
        try:
            async for event in model.stream(request):
                if isinstance(event, TextDelta):
                    click.echo(event.text, nl=False)
                elif isinstance(event, ToolCall):
                    click.echo(f"\n[tool call {event.name}({event.arguments})]", nl=False)
                elif isinstance(event, Finished):
                    click.echo()
        finally:  # the remote client's connection pool must close on this loop, also after an error
            await model.aclose()

    try:
        asyncio.run(ask(llm))
    except EngineError as exc:
        raise click.ClickException(str(exc)) from exc


@main.group()
def bench() -> None:
    """Benchmarks; results go to bench/results/."""


@bench.command("latency")
@CONFIG_OPTION
@click.option("--url", default=None, help="A running koe (ws://host:port); default: serve koe in-process.")
@click.option("--turns", type=int, default=12, show_default=True, help="Spoken turns per configuration.")
@click.option("--silence", default="200,500", show_default=True, help="silence_duration_ms values, comma-separated.")
@click.option(
    "--turn-detection", "turn_detection", default="server_vad,semantic_vad", show_default=True,
    help="Turn detection types, comma-separated.",
)  # fmt: skip
@click.option("--eagerness", type=click.Choice(["low", "medium", "high", "auto"]), default="auto", show_default=True)
@click.option(
    "--doors", default="voice-live,acs", show_default=True,
    help="Doors, comma-separated: voice-live (every turn detection and silence) and acs (agent mode, the server's "
    "acs.silence_duration_ms).",
)  # fmt: skip
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("bench/results/latency.json"))
def bench_latency(
    config_file: Path | None,
    url: str | None,
    turns: int,
    silence: str,
    turn_detection: str,
    eagerness: str,
    doors: str,
    out: Path,
) -> None:
    """Response latency (end of speech to first reply audio) and barge-in latency, at real-time pace, from the
    client's side, per turn detection and silence_duration_ms, with a per-stage waterfall."""
    from koe.bench.latency import bench_latency as run

    silences = tuple(int(value) for value in silence.split(",") if value.strip())
    kinds = tuple(value.strip() for value in turn_detection.split(",") if value.strip())
    chosen = tuple(value.strip() for value in doors.split(",") if value.strip())
    unknown = sorted(set(chosen) - {"voice-live", "acs"})
    if unknown:
        message = f"unknown door {', '.join(unknown)}: choose voice-live and/or acs"
        raise click.BadParameter(message, param_hint="--doors")
    settings = _settings(config_file)
    result = asyncio.run(run(settings, url, turns, _progress, config_file, silences, kinds, eagerness, chosen))
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2)
    out.write_text(text + "\n", encoding="utf-8")
    click.echo(text)
    _progress(f"wrote {out}")


@bench.command("engines")
@CONFIG_OPTION
@click.option("--runs", type=int, default=5, show_default=True, help="Repetitions per measurement (median).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("bench/results/engines.json"))
def bench_engines(config_file: Path | None, runs: int, out: Path) -> None:
    """Model load times, real-time factors, per-frame DSP costs, LLM latency and peak memory."""
    from koe.bench.engines import run_engine_bench

    result = run_engine_bench(_settings(config_file), runs=runs, progress=_progress)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2)
    out.write_text(text + "\n", encoding="utf-8")
    click.echo(text)
    _progress(f"wrote {out}")


@bench.command("tts")
@CONFIG_OPTION
@click.option("--runs", type=int, default=5, show_default=True, help="Repetitions per measurement (median).")
@click.option(
    "--languages", default="en,ja,zh", show_default=True, help="Comma-separated languages to measure (en, ja, zh)."
)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("bench/results/tts.json"))
def bench_tts(config_file: Path | None, runs: int, languages: str, out: Path) -> None:
    """Speech per language: first use and its memory, time to first audio (first clause cut, or not), RTF."""
    from koe.bench.tts import run_tts_bench

    wanted = [language.strip() for language in languages.split(",") if language.strip()]
    result = run_tts_bench(_settings(config_file), runs=runs, languages=wanted, progress=_progress)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2, ensure_ascii=False)
    out.write_text(text + "\n", encoding="utf-8")
    click.echo(text)
    _progress(f"wrote {out}")


@bench.command("speech")
@CONFIG_OPTION
@click.option("--runs", type=int, default=3, show_default=True, help="Timed repetitions per clip (median).")
@click.option("--clips", type=int, default=None, help="Clips per language (default: all fixtures).")
@click.option(
    "--fast-only", is_flag=True, help="Only the fast path at the configured beam (no padded calls, no beam 5)."
)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("bench/results/speech.json"))
def bench_speech(config_file: Path | None, runs: int, clips: int | None, fast_only: bool, out: Path) -> None:
    """WER/CER (en, ja, zh) clean, telephone-band and in babble; latency, RTF and memory per Whisper model."""
    from koe.bench.speech import run_speech_bench

    result = run_speech_bench(_settings(config_file), runs=runs, clips=clips, progress=_progress, fast_only=fast_only)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2, ensure_ascii=False)
    out.write_text(text + "\n", encoding="utf-8")
    click.echo(text)
    _progress(f"wrote {out}")


@bench.command("sora")
@CONFIG_OPTION
@click.option("--quick", is_flag=True, help="A smoke run: two small levels of each measurement.")
@click.option("--priority", is_flag=True, help="Run at raised priority (root), so other work distorts less.")
@click.option("--levels", default=None, help="Connections per speech trial, comma-separated (default 4,8,…,24).")
@click.option("--cycles", type=int, default=None, help="Utterances per connection in each speech trial (default 3).")
@click.option("--speech-only", is_flag=True, help="Only the speech runs (no relay or listener runs).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("bench/results/sora.json"))
def bench_sora(
    config_file: Path | None,
    quick: bool,
    priority: bool,
    levels: str | None,
    cycles: int | None,
    speech_only: bool,
    out: Path,
) -> None:
    """Sora door capacity: real-time transcribed connections, and test-service connections per core."""
    from koe.bench.sora import run_sora_bench

    counts = tuple(int(level) for level in levels.split(",")) if levels else None
    result = run_sora_bench(
        _settings(config_file),
        progress=_progress,
        quick=quick,
        priority=priority,
        levels=counts,
        cycles=cycles,
        speech_only=speech_only,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2)
    out.write_text(text + "\n", encoding="utf-8")
    click.echo(text)
    _progress(f"wrote {out}")


def _register_sora_sim() -> None:
    from koe.sim.sora.cli import sora_sim

    main.add_command(sora_sim)


_register_sora_sim()


def _register_acs() -> None:
    from koe.bench.acs import bench_acs
    from koe.sim.acs.cli import acs_call

    main.add_command(acs_call)
    bench.add_command(bench_acs)


_register_acs()


def _register_cluster() -> None:
    from koe.bench.cluster import bench_cluster

    bench.add_command(bench_cluster)


_register_cluster()


def _register_remote() -> None:
    from koe.bench.remote import bench_remote

    bench.add_command(bench_remote)


_register_remote()


def _register_fuzz() -> None:
    from koe.bench.fuzz.cli import bench_fuzz
    from koe.bench.soak.command import bench_soak

    bench.add_command(bench_fuzz)
    bench.add_command(bench_soak)


_register_fuzz()


def _load(config_file: Path | None, kind: EngineKind) -> Engines:
    from koe.engines.registry import load_engines

    engines = load_engines(_settings(config_file), [kind], progress=_progress)
    status = engines.status[kind]
    if not status.loaded:
        raise click.ClickException(f"the {kind} engine could not be loaded: {status.error}")
    return engines


if __name__ == "__main__":
    main()
