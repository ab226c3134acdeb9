"""The official ACS quickstart's flow (`callautomation-azure-openai-voice`), run as README's "Pointing the official
ACS samples at koe" says: an application of the sample's shape (`quickstart_app`, its own process, configured only
by the sample's settings) gets a call from the Call Automation emulator, answers it with the official aio SDK with
bidirectional media, bridges the media to koe's Realtime API through the Azure OpenAI client over TLS, and the
caller has a spoken turn, interrupts the reply (StopAudio) and hangs up.

koe's LLM is the chat-completions stand-in speaking a long story (what a model says is no part of this; the reply
must be long enough to interrupt). Checked: the call's REST and callbacks, the user's transcript, reply audio back
in the call, a barge-in that flushed queued audio, and the hang-up reaching the application."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from koe.audio.resample import resample
from koe.config import load_settings
from koe.engines.registry import Engines
from koe.net.inprocess import free_port
from koe.net.tls import ensure_local_tls
from koe.sim.acs.callautomation import CallAutomationEmulator
from koe.sim.acs.calls import CallScript, Speaker
from koe.sim.acs.participants import phone_raw_id
from koe.sim.acs.ringing import RingOptions
from tests.conftest import REPO, load_wav
from tests.engines.openai_standin import scripted_engines
from tests.server.acs.support import koe_server
from tests.wer import wer

pytestmark = [pytest.mark.models, pytest.mark.timeout(180)]

LINE_NOISE_RMS = 40
"""A phone line is never digital silence: the sample drops frames ACS marks silent (peak within ±64), so a caller
on a line of plain zeros would never end a turn."""


def _on_a_line(pcm: np.ndarray, lead_s: float, tail_s: float, rate: int = 16000) -> np.ndarray:
    audio = np.concatenate((np.zeros(int(lead_s * rate)), pcm.astype(np.float64), np.zeros(int(tail_s * rate))))
    noise = np.random.default_rng(7).normal(0, LINE_NOISE_RMS, audio.size)
    return np.clip(audio + noise, -32768, 32767).astype(np.int16)


async def _lines(stream: asyncio.StreamReader, into: list[dict[str, Any]]) -> None:
    while line := await stream.readline():
        with_json = line.decode().strip()
        if with_json.startswith("{"):
            into.append(json.loads(with_json))


async def test_the_quickstart_flow_against_the_emulator_and_koe_over_tls(
    engines: Engines, texts: dict[str, str], tmp_path: Path
) -> None:
    tls = ensure_local_tls(tmp_path / "tls")[0]
    emulator = CallAutomationEmulator(delivery_timeout_s=30.0)  # Event Grid's wait: the app may be slow on CI
    await emulator.start(tls_dir=tmp_path / "tls")  # the same local CA as koe's: one SSL_CERT_FILE trusts both
    settings = load_settings(overrides={"server": {"api_keys": ["koe-key"]}})
    short, rate = load_wav("short_16k.wav")
    barge, barge_rate = load_wav("utterance_48k.wav")
    barge_16k = np.asarray(resample(barge, barge_rate, 16000), dtype=np.int16)[: 16000 * 3 // 2]
    script = CallScript(
        [Speaker(phone_raw_id(1), _on_a_line(short, 0.5, 1.0), rate)],
        linger_ms=1500,
        reply_timeout_ms=30000,
        barge_in=Speaker(phone_raw_id(1), _on_a_line(barge_16k, 0.0, 0.5), 16000),
        barge_in_after_ms=400,  # early in the first sentence: a loaded machine may not have the next one yet
    )
    app_port = free_port()
    reported: list[dict[str, Any]] = []
    try:
        async with scripted_engines(engines) as scripted, koe_server(settings, scripted, tls=tls) as (koe, _app):
            env = {
                **os.environ,
                "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
                "SSL_CERT_FILE": str(tls.ca_cert),  # what koe tls init and the emulator print
                "ACS_CONNECTION_STRING": emulator.connection_string,
                "CALLBACK_URI_HOST": f"http://127.0.0.1:{app_port}",
                "AZURE_OPENAI_SERVICE_ENDPOINT": koe,  # https://127.0.0.1:PORT, nothing else
                "AZURE_OPENAI_SERVICE_KEY": "koe-key",
                "AZURE_OPENAI_DEPLOYMENT_MODEL_NAME": "gpt-4o-realtime-preview",
            }
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tests.sim.acs.quickstart_app", str(app_port), cwd=REPO, env=env,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            assert process.stdout is not None
            reader = asyncio.create_task(_lines(process.stdout, reported))
            try:
                url = f"http://127.0.0.1:{app_port}/api/incomingCall"
                result = await emulator.ring_and_follow(url, script, RingOptions(wait_s=60, call_timeout_s=120))
                await asyncio.sleep(0.5)  # the application's last lines
            finally:
                process.terminate()
                await process.wait()
                await asyncio.wait_for(reader, 5)
                assert process.stderr is not None
                err = await process.stderr.read()
    finally:
        await emulator.stop()
    said = [line for line in reported if "user" in line]
    events = [line.get("event") for line in reported]
    assert result.rest[:2] == ["answer", "get"], (result.rest, err.decode()[-2000:])
    assert result.callbacks[:3] == ["CallConnected", "ParticipantsUpdated", "MediaStreamingStarted"]
    assert result.callbacks[-1] == "CallDisconnected"
    assert {"callback": "CallDisconnected"} in reported  # the hang-up reached the application
    assert {"realtime": "connected"} in reported
    assert said and wer(texts["short"], said[0]["user"]) <= 0.2, reported
    report = result.media[0]
    assert report["rate"] == 24000
    assert report["violations"] == []
    assert report["outbound_audio_bytes"] > 0  # the reply's audio came back into the call
    assert report["stop_audio"] >= 1, reported
    assert "input_audio_buffer.speech_started" in events
    assert report["barge_ins"], json.dumps({**report, "reported": reported})
    assert report["barge_ins"][0]["dropped_ms"] > 0  # StopAudio flushed the reply that was still queued
    assert result.errors == []
