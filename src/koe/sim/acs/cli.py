"""`koe acs-call`: the ACS simulator from the command line.

- `koe acs-call media URL --wav a.wav --wav b.wav …` streams a call to any ACS media WebSocket server and prints a
  JSON report (frames, outbound audio, StopAudio, violations, barge-in timing); `--record call.wav` keeps both
  directions; `--jwt` signs the connection and serves the JWKS to verify it.
- `koe acs-call emulator` serves the Call Automation REST API over HTTPS (or HTTP) with a connection string that
  stays the same from run to run, and prints it with the line `koe serve` needs; with `--ring URL` it waits for the
  Event Grid webhook there to answer, rings it with a call whose callers say the `--wav` files, and follows the call.
- `koe acs-call ring URL --wav …` rings through a running emulator (its `POST /koe/ring`).

Every failure the user can fix ends in one line and exit status 1: a refused or unanswered call, a wrong key, an
unreachable URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from pathlib import Path
from typing import Any

import click
import numpy as np
from pydantic import SecretStr

from koe.audio.files import read_audio
from koe.audio.pcm import AudioFormatError
from koe.config import ConfigError, Settings, load_settings
from koe.net.tls import client_context, default_tls_dir
from koe.sim.acs.calls import CallScript, Speaker
from koe.sim.acs.identity import emulator_identity
from koe.sim.acs.media import MediaOptions, MediaStream
from koe.sim.acs.participants import CallAudio, Participant, SilencePolicy, acs_raw_id, phone_raw_id
from koe.sim.acs.ringing import RING_RATE, RingError, RingOptions, failure_reason, refusal_detail

WAV_HELP = "A caller's audio: PATH, or RAW_ID=PATH, with an optional @START_MS (repeat for more callers)."


def _participants(specs: tuple[str, ...], rate: int) -> list[Participant]:
    people = []
    for index, spec in enumerate(specs):
        raw_id, _, rest = spec.rpartition("=") if "=" in spec else ("", "", spec)
        path, _, start = rest.partition("@")
        default_id = phone_raw_id(index + 1) if index % 2 == 0 else acs_raw_id()
        try:
            pcm = read_audio(Path(path), rate)
            at_ms = int(start or 0)
        except (OSError, AudioFormatError, ValueError) as exc:
            raise click.BadParameter(f"{spec}: {exc}", param_hint="--wav") from exc
        people.append(Participant(raw_id or default_id, pcm, at_ms))
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
@click.option(
    "--no-downgrade",
    is_flag=True,
    help="Never fall back from wss:// to ws:// (default: on loopback, when the server speaks no TLS).",
)
@click.option("--reply-timeout-ms", type=int, default=0, help="After the audio, wait this long for an answer.")
@click.option("--linger-ms", type=int, default=0, help="Then keep the call until the server is quiet this long.")
@click.option("--barge-in", default=None, help="PATH of speech that interrupts the server's reply.")
@click.option("--barge-in-after-ms", type=int, default=800, show_default=True)
@click.option(
    "--record", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Stereo WAV of both directions."
)
@click.option("--call-id", default=None, help="x-ms-call-connection-id (default: a new GUID).")
@click.option(
    "--drop-at-ms", default="", help="Reset the media WebSocket at these media times and reconnect, as ACS does: MS,MS."
)
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
    drop_at_ms: str,
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
        drop_at_ms=[int(ms) for ms in drop_at_ms.split(",") if ms.strip()],
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


def _emulator_settings(config_file: Path | None) -> Settings:
    try:
        return load_settings(config_file)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


def _emulator_tls_dir(settings: Settings, given: Path | None) -> Path:
    return given or settings.acs_emulator.tls_dir or settings.server.tls_dir or default_tls_dir()


LINE_TAIL_S = 1.5
"""The line stays open this long after each caller's audio, carrying its noise (so a turn can end: see below)."""


def _script(wavs: tuple[str, ...], speed: float, line_noise_dbfs: float | None) -> CallScript:
    """The callers of a rung call. On a phone line they are never in digital silence: ACS marks frames within ±64
    `silent`, and apps that drop those (the official quickstart does) would otherwise never hear a turn end."""
    speakers = []
    rng = np.random.default_rng(0)
    for person in _participants(wavs, RING_RATE):
        pcm = person.pcm
        if line_noise_dbfs is not None:
            padded = np.concatenate((pcm.astype(np.float64), np.zeros(int(LINE_TAIL_S * RING_RATE))))
            noise = rng.normal(0.0, 32768 * 10 ** (line_noise_dbfs / 20), padded.size)
            pcm = np.clip(padded + noise, -32768, 32767).astype(np.int16)
        speakers.append(Speaker(person.raw_id, pcm, RING_RATE, person.start_ms))
    return CallScript(speakers, speed=speed)


CONFIG_OPTION = click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="koe's TOML config file ([acs_emulator]; default: $KOE_CONFIG, then ./koe.toml if present).",
)
RING_OPTIONS = [
    click.option(
        "--line-noise",
        "line_noise_dbfs",
        type=float,
        default=-60.0,
        show_default=True,
        help="The callers' line noise in dBFS (RMS), and after each of them; --clean-line for none.",
    ),
    click.option("--clean-line", is_flag=True, help="No line noise: digital silence between words."),
    click.option(
        "--wait",
        "wait_s",
        type=float,
        default=60.0,
        show_default=True,
        help="Seconds to keep trying while nothing answers at the URL yet.",
    ),
    click.option(
        "--answer-timeout",
        "answer_timeout_s",
        type=float,
        default=30.0,
        show_default=True,
        help="Seconds the application has to answer the call after taking IncomingCall.",
    ),
    click.option(
        "--call-timeout",
        "call_timeout_s",
        type=float,
        default=3600.0,
        show_default=True,
        help="Seconds an answered call may last before the emulator hangs up.",
    ),
]


def ring_options(command: Any) -> Any:
    for option in reversed(RING_OPTIONS):
        command = option(command)
    return command


@acs_call.command("emulator")
@CONFIG_OPTION
@click.option("--host", default=None, help="Address to listen on (default: acs_emulator.host, 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default: acs_emulator.port, 8443).")
@click.option(
    "--access-key",
    default=None,
    help="The connection string's key, base64 (default: acs_emulator.access_key, else one kept in koe's "
    "data directory).",
)
@click.option("--resource-id", default=None, help="The ACS resource id, its tokens' audience (default: kept).")
@click.option(
    "--tls-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where its CA and certificate are, made when missing (default: koe's, see koe tls init).",
)
@click.option("--plain-http", is_flag=True, help="Serve HTTP instead of HTTPS (for constructor-built clients).")
@click.option(
    "--ca-file",
    "ca_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Also trust this CA when calling the application (repeat for more).",
)
@click.option(
    "--ring",
    "ring_url",
    default=None,
    help="Ring this Event Grid webhook with a call once it answers, follow the call, and exit.",
)
@click.option("--wav", "wavs", multiple=True, help=WAV_HELP)
@click.option("--speed", type=float, default=1.0, show_default=True)
@ring_options
def emulator(
    config_file: Path | None,
    host: str | None,
    port: int | None,
    access_key: str | None,
    resource_id: str | None,
    tls_dir: Path | None,
    plain_http: bool,
    ca_files: tuple[Path, ...],
    ring_url: str | None,
    wavs: tuple[str, ...],
    speed: float,
    line_noise_dbfs: float,
    clean_line: bool,
    wait_s: float,
    answer_timeout_s: float,
    call_timeout_s: float,
) -> None:
    """Serve the Call Automation REST API (answer, media streaming, hang-up) until interrupted.

    It prints the connection string for the application and the line that lets `koe serve` answer calls; the key and
    the CA stay the same from run to run. Ring an application through it with --ring, or later with
    `koe acs-call ring`.
    """
    from koe.sim.acs.callautomation import CallAutomationEmulator

    settings = _emulator_settings(config_file)
    options = settings.acs_emulator
    if ring_url and not wavs:
        raise click.UsageError("--ring needs at least one --wav: what the caller says")
    script = _script(wavs, speed, None if clean_line else line_noise_dbfs) if ring_url else None
    try:
        identity = emulator_identity(options.model_copy(update=_given(access_key=access_key, resource_id=resource_id)))
        emu = CallAutomationEmulator(identity.access_key, identity.resource_id, trust=ca_files)
    except ValueError as exc:
        raise click.ClickException(f"--access-key: {exc}") from exc
    folder = None if plain_http else _emulator_tls_dir(settings, tls_dir)
    where = f"{host or options.host}:{port if port is not None else options.port}"

    async def run() -> int:
        try:
            await emu.start(host or options.host, port if port is not None else options.port, folder)
        except (OSError, RuntimeError) as exc:
            raise click.ClickException(f"cannot serve the emulator on {where}: {exc} (choose another --port)") from exc
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        try:
            _announce(emu)
            if script is None:
                await stop.wait()
                return 0
            assert ring_url is not None
            click.echo(f"koe: ringing {ring_url} (waiting up to {wait_s:g} s for it to answer)", err=True)
            ringing = asyncio.ensure_future(
                emu.ring_and_follow(ring_url, script, RingOptions(wait_s, answer_timeout_s, call_timeout_s))
            )
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait({ringing, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not ringing.done():
                ringing.cancel()
                click.echo("koe: stopped before the call ended", err=True)
                return 1
            try:
                result = ringing.result()
            except RingError as exc:
                click.echo(f"koe: {exc}", err=True)
                return 1
            click.echo(json.dumps(result.as_dict(), indent=2))
            click.echo(f"koe: {result.summary()}", err=True)
            return 0
        finally:
            await emu.stop()

    status = 0
    with contextlib.suppress(KeyboardInterrupt):
        status = asyncio.run(run())
    sys.exit(status)


def _given(**values: str | None) -> dict[str, Any]:
    return {key: SecretStr(value) if key == "access_key" else value for key, value in values.items() if value}


def _announce(emu: Any) -> None:
    """What the application and koe need, on stdout (shell lines), and what the emulator is, on stderr."""
    connection = emu.connection_string
    click.echo(f"ACS_CONNECTION_STRING='{connection}'")
    koe_line = f"KOE_ACS__CONNECTION_STRING='{connection}'"
    if emu.ca_file is not None:
        click.echo(f"SSL_CERT_FILE={emu.ca_file} REQUESTS_CA_BUNDLE={emu.ca_file} NODE_EXTRA_CA_CERTS={emu.ca_file}")
        koe_line += f" KOE_ACS__CA_FILE={emu.ca_file}"
    click.echo(f"{koe_line} koe serve")
    click.echo(
        f"koe: Call Automation emulator on {emu.endpoint} (resource id {emu.resource_id}, JWKS at "
        f"{emu.endpoint}calling/keys); ring an application through it: koe acs-call ring URL --wav FILE",
        err=True,
    )


@acs_call.command("ring")
@click.argument("url")
@CONFIG_OPTION
@click.option("--wav", "wavs", multiple=True, required=True, help=WAV_HELP)
@click.option("--speed", type=float, default=1.0, show_default=True)
@click.option(
    "--connection-string",
    envvar="ACS_CONNECTION_STRING",
    default=None,
    help="The running emulator's (default: $ACS_CONNECTION_STRING, else acs_emulator.*, the kept key).",
)
@click.option(
    "--ca-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="The CA of the emulator's certificate (default: the one in its TLS directory).",
)
@ring_options
def ring(
    url: str,
    config_file: Path | None,
    wavs: tuple[str, ...],
    speed: float,
    connection_string: str | None,
    ca_file: Path | None,
    line_noise_dbfs: float,
    clean_line: bool,
    wait_s: float,
    answer_timeout_s: float,
    call_timeout_s: float,
) -> None:
    """Ring the Event Grid webhook at URL through a running `koe acs-call emulator`, and print the call's result."""
    import base64

    import httpx

    from koe.sim.acs.signing import sign_request

    settings = _emulator_settings(config_file)
    options = settings.acs_emulator
    if connection_string:
        endpoint, key = _parse_connection_string(connection_string)
    else:
        endpoint = f"https://{options.host}:{options.port}/"
        try:
            key = emulator_identity(options).access_key
        except ValueError as exc:
            raise click.ClickException(f"acs_emulator.access_key: {exc}") from exc
    speakers = [
        {
            "raw_id": s.raw_id,
            "pcm16": base64.b64encode(np.asarray(s.pcm, "<i2").tobytes()).decode(),
            "start_ms": s.start_ms,
        }
        for s in _script(wavs, speed, None if clean_line else line_noise_dbfs).speakers
    ]
    body = json.dumps(
        {
            "url": url,
            "speakers": speakers,
            "speed": speed,
            "wait_s": wait_s,
            "answer_timeout_s": answer_timeout_s,
            "call_timeout_s": call_timeout_s,
        }
    ).encode()
    target = endpoint.rstrip("/") + "/koe/ring"
    ca = ca_file or _emulator_tls_dir(settings, None) / "ca.pem"
    verify = client_context(ca if ca.is_file() else None)
    try:
        headers = {"content-type": "application/json", **sign_request("POST", target, body, key)}
    except ValueError as exc:
        raise click.ClickException(f"the connection string's access key: {exc}") from exc
    click.echo(f"koe: ringing {url} through the emulator at {endpoint}", err=True)
    try:
        with httpx.Client(verify=verify, timeout=httpx.Timeout(10.0, read=None)) as client:
            response = client.post(target, content=body, headers=headers)
    except httpx.HTTPError as exc:
        raise click.ClickException(
            f"no emulator answers at {endpoint} ({failure_reason(exc)}): start one with koe acs-call emulator"
        ) from exc
    if response.status_code != 200:
        detail = refusal_detail(response)
        if response.status_code == 401:
            detail = f"the emulator refused the access key ({detail}): give its connection string (--connection-string)"
        raise click.ClickException(detail or f"the emulator answered HTTP {response.status_code}")
    result = response.json()
    click.echo(json.dumps(result, indent=2))
    click.echo(f"koe: {result.get('summary', '')}", err=True)


def _parse_connection_string(text: str) -> tuple[str, str]:
    parts = dict(item.split("=", 1) for item in text.strip().strip("'\"").split(";") if "=" in item)
    endpoint, key = parts.get("endpoint"), parts.get("accesskey")
    if not endpoint or not key:
        raise click.ClickException("a connection string reads endpoint=https://host:port/;accesskey=KEY")
    return endpoint if endpoint.endswith("/") else endpoint + "/", key
