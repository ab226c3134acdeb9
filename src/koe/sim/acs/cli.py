"""`koe acs-call`: the ACS simulator from the command line.

- `koe acs-call media URL --wav a.wav --wav b.wav …` streams a call to any ACS media WebSocket server and prints a
  JSON report (frames, outbound audio, StopAudio, violations, barge-in timing); `--record call.wav` keeps both
  directions; `--jwt` signs the connection and serves the JWKS to verify it.
- `koe acs-call emulator` serves the Call Automation REST API over HTTPS (or HTTP), and with `--ring URL` rings an
  Event Grid webhook with a call whose callers say the `--wav` files.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
from pathlib import Path
from typing import Any

import click

from koe.audio.files import read_audio
from koe.sim.acs.media import MediaOptions, MediaStream
from koe.sim.acs.participants import CallAudio, Participant, SilencePolicy, acs_raw_id, phone_raw_id

WAV_HELP = "A caller's audio: PATH, or RAW_ID=PATH, with an optional @START_MS (repeat for more callers)."


def _participants(specs: tuple[str, ...], rate: int) -> list[Participant]:
    people = []
    for index, spec in enumerate(specs):
        raw_id, _, rest = spec.rpartition("=") if "=" in spec else ("", "", spec)
        path, _, start = rest.partition("@")
        default_id = phone_raw_id(index + 1) if index % 2 == 0 else acs_raw_id()
        people.append(Participant(raw_id or default_id, read_audio(Path(path), rate), int(start or 0)))
    return people


def _dtmf(spec: str) -> list[tuple[int, str]]:
    tones = []
    for item in filter(None, spec.split(",")):
        at, _, tone = item.partition(":")
        tones.append((int(at), tone))
    return tones


@click.group("acs-call")
def acs_call() -> None:
    """Simulate the ACS side of a call (media streaming, Call Automation)."""


@acs_call.command("media")
@click.argument("url")
@click.option("--wav", "wavs", multiple=True, required=True, help=WAV_HELP)
@click.option("--rate", type=click.Choice(["16000", "24000"]), default="16000", show_default=True)
@click.option("--unmixed", is_flag=True, help="One channel per caller (up to 4 at once) instead of one mix.")
@click.option("--speed", type=float, default=1.0, show_default=True, help="Multiple of real time; 0: unpaced.")
@click.option("--silence", type=click.Choice(["continuous", "empty", "suppress"]), default="continuous")
@click.option("--dtmf", default="", help="Tones to send: MS:TONE,MS:TONE (e.g. 1000:5,1500:#).")
@click.option("--no-bidirectional", is_flag=True, help="Flag outbound audio as a violation.")
@click.option("--jwt", "jwt_port", type=int, default=None, help="Sign a JWT and serve its JWKS on this port.")
@click.option("--audience", default="koe-acs-resource", show_default=True, help="JWT audience (ACS resource id).")
@click.option("--token", default=None, help="Send this Bearer token instead.")
@click.option("--ca-file", type=click.Path(dir_okay=False, path_type=Path), default=None, help="CA for wss://.")
@click.option("--no-downgrade", is_flag=True, help="Keep wss:// to loopback hosts (default: connect as ws://).")
@click.option("--reply-timeout-ms", type=int, default=0, help="After the audio, wait this long for an answer.")
@click.option("--linger-ms", type=int, default=0, help="Then keep the call until the server is quiet this long.")
@click.option("--barge-in", default=None, help="PATH of speech that interrupts the server's reply.")
@click.option("--barge-in-after-ms", type=int, default=800, show_default=True)
@click.option(
    "--record", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Stereo WAV of both directions."
)
@click.option("--call-id", default=None, help="x-ms-call-connection-id (default: a new GUID).")
def media(
    url: str,
    wavs: tuple[str, ...],
    rate: str,
    unmixed: bool,
    speed: float,
    silence: SilencePolicy,
    dtmf: str,
    no_bidirectional: bool,
    jwt_port: int | None,
    audience: str,
    token: str | None,
    ca_file: Path | None,
    no_downgrade: bool,
    reply_timeout_ms: int,
    linger_ms: int,
    barge_in: str | None,
    barge_in_after_ms: int,
    record: Path | None,
    call_id: str | None,
) -> None:
    """Stream a call to the media WebSocket at URL, as ACS would, and print a JSON report."""
    hz = int(rate)
    audio = CallAudio(_participants(wavs, hz), hz, mixed=not unmixed, silence=silence)
    options = MediaOptions(
        url,
        hz,
        bidirectional=not no_bidirectional,
        enable_dtmf=bool(dtmf),
        dtmf=_dtmf(dtmf),
        speed=speed,
        token=token,
        downgrade_tls=not no_downgrade,
        ca_file=ca_file,
        reply_timeout_ms=reply_timeout_ms,
        linger_ms=linger_ms,
        barge_in=(phone_raw_id(99), read_audio(Path(barge_in), hz)) if barge_in else None,
        barge_in_after_ms=barge_in_after_ms,
    )
    if call_id:
        options.call_connection_id = call_id

    async def run() -> dict[str, Any]:
        jwks_server = None
        if jwt_port is not None:
            jwks_server, options.token = await _serve_jwks(jwt_port, audience)
        try:
            stream = MediaStream(options, audio)
            report = await stream.run()
            if record is not None:
                stream.write_recording(record)
            return report.as_dict()
        finally:
            if jwks_server is not None:
                await jwks_server.stop()

    try:
        result = asyncio.run(run())
    except Exception as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(result, indent=2))


async def _serve_jwks(port: int, audience: str) -> tuple[Any, str]:
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from koe.net.inprocess import start_app
    from koe.sim.acs.tokens import SigningKey

    key = SigningKey()
    app = Starlette(routes=[Route("/calling/keys", lambda _request: JSONResponse(key.jwks()))])
    server = await start_app(app, "127.0.0.1", port)
    click.echo(f"koe: JWKS at http://127.0.0.1:{server.port}/calling/keys (audience {audience})", err=True)
    return server, key.sign(audience)


@acs_call.command("emulator")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8443, show_default=True)
@click.option("--tls-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to write the CA and certificate (default: a temporary folder).")  # fmt: skip
@click.option("--plain-http", is_flag=True, help="Serve HTTP instead of HTTPS (for constructor-built clients).")
@click.option("--ring", "ring_url", default=None, help="Ring this Event Grid webhook with a call, then keep serving.")
@click.option("--wav", "wavs", multiple=True, help=WAV_HELP)
@click.option("--speed", type=float, default=1.0, show_default=True)
def emulator(
    host: str,
    port: int,
    tls_dir: Path | None,
    plain_http: bool,
    ring_url: str | None,
    wavs: tuple[str, ...],
    speed: float,
) -> None:
    """Serve the Call Automation REST API (answer, media streaming, hang-up) until interrupted."""
    from koe.sim.acs.callautomation import CallAutomationEmulator
    from koe.sim.acs.calls import CallScript, Speaker

    async def run() -> None:
        emu = CallAutomationEmulator()
        folder = None if plain_http else (tls_dir or Path(tempfile.mkdtemp(prefix="koe-acs-")))
        await emu.start(host, port, folder)
        click.echo(f"ACS_CONNECTION_STRING='{emu.connection_string}'")
        if emu.ca_file is not None:
            click.echo(f"REQUESTS_CA_BUNDLE={emu.ca_file} SSL_CERT_FILE={emu.ca_file}")
        click.echo(f"JWKS: {emu.endpoint}calling/keys  audience: {emu.resource_id}")
        try:
            if ring_url:
                speakers = [Speaker(p.raw_id, p.pcm, 16000, p.start_ms) for p in _participants(wavs, 16000)]
                call = await emu.ring(ring_url, CallScript(speakers, speed=speed))
                click.echo(f"rang {ring_url}: call {call.call_connection_id}", err=True)
                await call.wait_for("CallDisconnected", timeout_s=3600)
                click.echo(json.dumps({"callbacks": call.callback_types(), "rest": call.rest}, indent=2))
            else:
                await asyncio.Event().wait()
        finally:
            await emu.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
