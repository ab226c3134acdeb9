"""`koe acs-call emulator` and `koe acs-call ring` as the README and docs/acs.md tell a user to run them, each
command line as written there: a connection string that stays the same from run to run, koe answering calls with
the line the emulator prints, ringing a running emulator again, `--ring` waiting for an application that starts
later, and every failure the user can fix as one line with exit status 1 (refused, unanswered, unreachable, a wrong
key). koe runs in echo mode: no model is needed for the call."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from koe.cli import main
from koe.config import load_settings
from koe.engines.registry import Engines
from koe.net.inprocess import free_port, serving
from koe.net.tls import ensure_local_tls
from koe.server.app import create_app
from tests.conftest import AUDIO
from tests.server.acs.support import koe_server

pytestmark = pytest.mark.timeout(120)

WAV = str(AUDIO / "short_16k.wav")


def _env(tmp_path: Path, **more: str) -> dict[str, str]:
    """A user whose koe data directory is `tmp_path` (the local CA, the emulator's kept key)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("KOE_", "ACS_"))}
    return {**env, "XDG_DATA_HOME": str(tmp_path / "xdg"), **more}


async def _koe(*args: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "koe", *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )


@contextlib.asynccontextmanager
async def _emulator(tmp_path: Path, *args: str) -> AsyncIterator[tuple[list[str], int]]:
    """`koe acs-call emulator --port P …` running; yields the three lines it printed and P, then stops it as a user
    does (SIGTERM, or Ctrl-C), which it must take cleanly."""
    port = free_port()
    process = await _koe("acs-call", "emulator", "--port", str(port), *args, env=_env(tmp_path))
    assert process.stdout is not None
    try:
        lines = [(await asyncio.wait_for(process.stdout.readline(), 30)).decode().strip() for _ in range(3)]
        yield lines, port
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        _, err = await process.communicate()
    assert process.returncode == 0, err.decode()


def _assignments(line: str) -> dict[str, str]:
    """`A='x' B=y …` as the shell reads it (the lines the emulator prints)."""
    import shlex

    return dict(word.split("=", 1) for word in shlex.split(line) if "=" in word)


def _one_line_error(err: bytes) -> str:
    text = err.decode()
    assert "Traceback" not in text, text
    errors = [line for line in text.splitlines() if line and not line.startswith("koe: ringing")]
    assert len(errors) == 1, text
    return errors[0]


async def test_the_connection_string_stays_and_koe_answers_with_the_printed_line(tmp_path: Path) -> None:
    """The documented flow, each command as written: `koe acs-call emulator`; `koe serve --tls` with the line it
    printed; `koe acs-call ring URL --wav FILE`, which finds the running emulator by itself (the kept key on
    acs_emulator.port; here a free port instead of 8443, so as not to meet a user's emulator)."""
    async with _emulator(tmp_path) as (first, _port):
        pass
    async with _emulator(tmp_path) as (lines, port):
        assert lines[0] == first[0].replace(str(_port), str(port))  # the same key from run to run
        connection = _assignments(lines[0])["ACS_CONNECTION_STRING"]
        assert connection.startswith(f"endpoint=https://127.0.0.1:{port}/;accesskey=")
        ca = tmp_path / "xdg" / "koe" / "tls" / "ca.pem"
        assert _assignments(lines[1]) == {
            "SSL_CERT_FILE": str(ca), "REQUESTS_CA_BUNDLE": str(ca), "NODE_EXTRA_CA_CERTS": str(ca)
        }  # fmt: skip
        for_koe = _assignments(lines[2])
        assert lines[2].endswith(" koe serve")
        assert for_koe == {"KOE_ACS__CONNECTION_STRING": connection, "KOE_ACS__CA_FILE": str(ca)}
        koe_port = free_port()
        # echo mode (no model speaks) and a free Sora port: the rest is the printed line
        koe_env = _env(tmp_path, **for_koe, KOE_ACS__MODE="echo", KOE_SORA__PORT=str(free_port()))
        koe = await _koe("serve", "--tls", "--port", str(koe_port), "--log-level", "warning", env=koe_env)
        try:
            ring_env = _env(tmp_path, KOE_ACS_EMULATOR__PORT=str(port))
            url = f"https://127.0.0.1:{koe_port}/acs/events"
            ring = await _koe("acs-call", "ring", url, "--wav", WAV, "--speed", "4", env=ring_env)
            out, err = await asyncio.wait_for(ring.communicate(), 110)
        finally:
            koe.terminate()
            await koe.communicate()
    assert ring.returncode == 0, err.decode()
    result = json.loads(out)
    assert result["result"] == "answered"
    assert result["rest"][0] == "answer"
    assert result["callbacks"][0] == "CallConnected"
    assert result["callbacks"][-1] == "CallDisconnected"
    assert result["media"][0]["url"] == f"wss://127.0.0.1:{koe_port}/acs/media"  # koe over TLS: wss://
    assert result["media"][0]["outbound_audio_bytes"] > 0  # echoed
    assert result["errors"] == []
    assert err.decode().strip().splitlines()[-1] == f"koe: {result['summary']}"


async def test_ring_waits_for_koe_to_start_then_follows_the_call(tmp_path: Path) -> None:
    """`koe acs-call emulator --ring URL --wav FILE` started before koe: it waits until the webhook answers, follows
    the call to its end, prints the result and exits."""
    files = ensure_local_tls(tmp_path / "xdg" / "koe" / "tls")[0]
    koe_port = free_port()
    url = f"https://127.0.0.1:{koe_port}/acs/events"
    args = ["--port", str(free_port()), "--ring", url, "--wav", WAV, "--speed", "4", "--wait", "60"]
    process = await _koe("acs-call", "emulator", *args, env=_env(tmp_path))
    assert process.stdout is not None
    connection = _assignments((await asyncio.wait_for(process.stdout.readline(), 30)).decode())
    await asyncio.sleep(1.5)  # koe starts later than the emulator
    acs = {"mode": "echo", "connection_string": connection["ACS_CONNECTION_STRING"], "ca_file": str(files.ca_cert)}
    app = create_app(load_settings(overrides={"acs": acs}), Engines())
    async with serving(app, port=koe_port, certfile=files.cert, keyfile=files.key):
        out, err = await asyncio.wait_for(process.communicate(), 90)
    assert process.returncode == 0, err.decode()
    result = json.loads(out[out.index(b"{") :])
    assert result["callbacks"][-1] == "CallDisconnected"
    assert [call.state for call in app.state.calls.calls()] == ["ended"]
    assert err.decode().strip().splitlines()[-1].startswith(f"koe: call {result['call_connection_id']} answered: ")


async def test_a_refused_call_is_one_line(tmp_path: Path) -> None:
    """koe without acs.connection_string refuses IncomingCall, and says what to set."""
    async with koe_server(load_settings(overrides={"acs": {"mode": "echo"}})) as (base, _app):
        process = await _koe(
            "acs-call", "emulator", "--port", str(free_port()), "--ring", f"{base}/acs/events", "--wav", WAV,
            env=_env(tmp_path),
        )  # fmt: skip
        _, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 1
    line = _one_line_error(err[err.find(b"koe: ringing") :])
    assert "refused IncomingCall with HTTP 503: acs.connection_string is not configured" in line


async def test_an_unanswered_call_is_one_line(tmp_path: Path) -> None:
    """An application that takes IncomingCall and never answers: the ring timeout ends it."""

    async def events(request: Request) -> Response:
        body = await request.json()
        if body[0]["eventType"].endswith("SubscriptionValidationEvent"):
            return JSONResponse({"validationResponse": body[0]["data"]["validationCode"]})
        return Response(status_code=200)

    app = Starlette(routes=[Route("/api/incomingCall", events, methods=["POST"])])
    async with serving(app, quiet=True) as port:
        process = await _koe(
            "acs-call", "emulator", "--port", str(free_port()), "--ring", f"http://127.0.0.1:{port}/api/incomingCall",
            "--wav", WAV, "--answer-timeout", "1", env=_env(tmp_path),
        )  # fmt: skip
        _, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 1
    line = _one_line_error(err[err.find(b"koe: ringing") :])
    assert line.endswith("took IncomingCall but did not answer the call within 1 s (see the application's log)")


def test_an_unreachable_url_is_one_line(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/acs/events"
    args = ["acs-call", "emulator", "--port", str(free_port()), "--ring", url, "--wav", WAV, "--wait", "1"]
    result = CliRunner().invoke(main, args, env=_env(tmp_path))
    assert result.exit_code == 1
    assert f"koe: nothing answers at {url} (waited 1 s): connection refused" in result.stderr
    assert "Traceback" not in result.output + result.stderr


async def test_a_wrong_key_and_no_emulator_are_one_line(tmp_path: Path) -> None:
    async with _emulator(tmp_path) as (lines, port):
        wrong = f"endpoint=https://127.0.0.1:{port}/;accesskey=d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZw=="
        process = await _koe("acs-call", "ring", "http://127.0.0.1:9/x", "--wav", WAV, "--connection-string", wrong,
                             env=_env(tmp_path))  # fmt: skip
        _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 1
    assert "the emulator refused the access key (the HMAC signature does not match)" in _one_line_error(err)
    nobody = f"endpoint=https://127.0.0.1:{free_port()}/;accesskey=a2V5"
    result = CliRunner().invoke(main, ["acs-call", "ring", "http://127.0.0.1:9/x", "--wav", WAV,
                                       "--connection-string", nobody], env=_env(tmp_path))  # fmt: skip
    assert result.exit_code == 1
    assert "no emulator answers at https://127.0.0.1:" in result.stderr
    assert "connection refused): start one with koe acs-call emulator" in result.stderr
    bad_key = CliRunner().invoke(main, ["acs-call", "emulator", "--access-key", "not base64!"], env=_env(tmp_path))
    assert bad_key.exit_code == 1
    assert "--access-key: an ACS access key is base64" in bad_key.stderr
    assert lines[0].startswith("ACS_CONNECTION_STRING=")
