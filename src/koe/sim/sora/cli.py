"""`koe sora-sim`: play Sora against a Suzu-compatible gateway from the command line.

Without `--serve` it runs one channel: a session with `audio_streaming: true` (or auto mode with `--auto`, where a
recvonly subscriber joins and subscribes), one sendrecv client per `--source` file, every push printed as a JSON
line, and a summary (and `--out FILE` with everything sent and received) when the audio is done. With `--serve` it
starts the simulator's Sora-style API (`koe.sim.sora.api`) and waits, so a person or a test can drive sessions.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

import click

from koe.sim.sora.channel import ChannelSettings
from koe.sim.sora.gateway_client import TLSOptions
from koe.sim.sora.simulator import SimulatorOptions, SoraSimulator


@click.command("sora-sim")
@click.argument("gateway_url")
@click.option("--source", "sources", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Audio file (WAV, Ogg Opus, …) for one sendrecv client; repeat for more clients.")  # fmt: skip
@click.option("--language", default="en-US", show_default=True, help="sora-audio-streaming-language-code.")
@click.option("--path", default="/speech", show_default=True, help="Gateway path (/speech, /test, /dump).")
@click.option("--framing", type=click.Choice(["header", "raw"]), default="header", show_default=True,
              help="audio_streaming_header: header = 20-byte header per packet, raw = a packet per frame.")  # fmt: skip
@click.option("--speed", type=float, default=1.0, show_default=True, help="Packet pace: 1 = real time (20 ms).")
@click.option("--channel", "channel_id", default="sora", show_default=True)
@click.option("--auto", is_flag=True, help="audio_streaming_auto: stream only while someone subscribes.")
@click.option("--ca", type=click.Path(exists=True, dir_okay=False), help="CA file for the gateway's certificate.")
@click.option("--cert", type=click.Path(exists=True, dir_okay=False), help="Client certificate (mTLS).")
@click.option("--key", type=click.Path(exists=True, dir_okay=False), help="Client certificate key (mTLS).")
@click.option("--webhook-url", default=None, help="Where to POST audio-streaming.started/stopped webhooks.")
@click.option("--session-webhook-url", default=None, help="Ask this URL for the session.created answer.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write every stream's record here.")
@click.option("--serve", is_flag=True, help="Serve the simulator's Sora-style API and wait (see --api-port).")
@click.option("--api-host", default="127.0.0.1", show_default=True)
@click.option("--api-port", type=int, default=3000, show_default=True)
def sora_sim(
    gateway_url: str,
    sources: tuple[Path, ...],
    language: str,
    path: str,
    framing: str,
    speed: float,
    channel_id: str,
    auto: bool,
    ca: str | None,
    cert: str | None,
    key: str | None,
    webhook_url: str | None,
    session_webhook_url: str | None,
    out: Path | None,
    serve: bool,
    api_host: str,
    api_port: int,
) -> None:
    """Stream audio files to a Sora audio streaming gateway (koe, Suzu, …) as Sora would."""
    options = SimulatorOptions(
        gateway_url,
        path=path,
        framing="header" if framing == "header" else "raw",
        tls=TLSOptions(ca, cert, key) if gateway_url.startswith("https") else None,
        speed=speed,
        event_webhook_url=webhook_url,
        session_webhook_url=session_webhook_url,
        channel=ChannelSettings(default_audio_streaming_result_push=not auto),
    )
    if serve:
        asyncio.run(_serve(options, api_host, api_port))
        return
    if not sources:
        raise click.UsageError("give at least one --source file (or --serve to drive the simulator over HTTP)")
    summary, full = asyncio.run(_run(options, channel_id, sources, language, auto))
    if out is not None:
        out.write_text(json.dumps(full, indent=2, ensure_ascii=False))
    click.echo(json.dumps(summary, ensure_ascii=False), err=True)
    if any(stream["error"] or stream["status"] != 200 for stream in summary["streams"]):
        sys.exit(1)


async def _run(
    options: SimulatorOptions, channel_id: str, sources: tuple[Path, ...], language: str, auto: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    sim = SoraSimulator(options)
    printer = asyncio.get_running_loop().create_task(_print_pushes(sim))
    try:
        await sim.create_session(channel_id, audio_streaming=True, audio_streaming_auto=auto or None)
        listener = await sim.connect(channel_id, role="recvonly")
        for source in sources:
            await sim.connect(channel_id, language_code=language, source=source)
        if auto:
            await sim.subscribe(channel_id, listener)
        await asyncio.sleep(0)
        await sim.wait_idle()
        if sim.channels[channel_id].session_id is not None:
            await sim.terminate_session(channel_id)  # the listener leaves too: streaming stops, with its webhook
    finally:
        printer.cancel()
        await sim.close()
    records = [record.as_dict() for record in sim.records]
    streams = [
        {k: r[k] for k in ("connection_id", "status", "error", "packets_sent")} | {"results": len(r["results"])}
        for r in records
    ]
    summary = {"streams": streams, "webhooks": [w["type"] for w in sim.webhooks]}
    return summary, {"streams": records, "webhooks": sim.webhooks}


async def _print_pushes(sim: SoraSimulator) -> None:
    seen: set[int] = set()
    while True:
        _target, envelope = await sim.push_events.get()
        if id(envelope) not in seen:  # one line per result, however many subscribers got it
            seen.add(id(envelope))
            click.echo(json.dumps(envelope, ensure_ascii=False))


async def _serve(options: SimulatorOptions, host: str, port: int) -> None:
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    from koe.sim.sora.api import api_app

    sim = SoraSimulator(options)
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    click.echo(f"koe: Sora simulator API on http://{host}:{port}/ (x-sora-target: Sora_20250101.<Action>)", err=True)
    try:
        await serve(api_app(sim), config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]  # Starlette is ASGI 3
    finally:
        await sim.close()
