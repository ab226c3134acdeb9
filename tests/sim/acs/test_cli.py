"""`koe acs-call media` as a user runs it: against a real koe server (echo mode) that checks the CLI's own JWT
against the JWKS the CLI serves, with DTMF, and a two-track recording."""

from __future__ import annotations

import asyncio
import json
import sys
import wave
from pathlib import Path

import pytest

from koe.config import load_settings
from koe.net.inprocess import free_port
from tests.conftest import AUDIO
from tests.server.acs.support import koe_server

pytestmark = pytest.mark.timeout(60)


async def test_media_command_streams_a_signed_call_and_records_it(tmp_path: Path) -> None:
    jwks_port = free_port()
    jwt = {"enabled": True, "jwks_url": f"http://127.0.0.1:{jwks_port}/calling/keys", "audience": "res-1"}
    settings = load_settings(overrides={"acs": {"mode": "echo", "jwt": jwt}})
    record = tmp_path / "call.wav"
    async with koe_server(settings) as (base, app):
        url = base.replace("http", "ws") + "/acs/media"
        args = ["-m", "koe", "acs-call", "media", url, "--wav", f"4:+15550100001={AUDIO / 'short_16k.wav'}"]
        args += ["--speed", "8", "--jwt", str(jwks_port), "--audience", "res-1", "--dtmf", "100:5,200:#"]
        args += ["--record", str(record), "--linger-ms", "300", "--call-id", "cli-call"]
        process = await asyncio.create_subprocess_exec(
            sys.executable, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await asyncio.wait_for(process.communicate(), 50)
        call = app.state.calls.get("cli-call")
    assert process.returncode == 0, err.decode()
    report = json.loads(out)
    assert report["violations"] == []
    assert report["outbound_audio_bytes"] > 0
    assert call is not None
    tones = [e["tone"] for e in call.recent if e["type"] == "dtmf"]
    assert tones == ["5", "#"]
    with wave.open(str(record)) as wav:
        assert wav.getnchannels() == 2
        assert wav.getframerate() == 16000


async def test_media_command_reports_a_refusal() -> None:
    settings = load_settings(overrides={"acs": {"mode": "echo", "jwt": {"enabled": True, "audience": "x"}}})
    async with koe_server(settings) as (base, _app):
        url = base.replace("http", "ws") + "/acs/media"
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "koe", "acs-call", "media", url, "--wav", str(AUDIO / "short_16k.wav"),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await asyncio.wait_for(process.communicate(), 50)
    assert process.returncode == 1
    assert b"HTTP 401" in err
