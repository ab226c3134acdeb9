"""The Sora simulator against koe's Sora door with the real models: 3 connections in one channel, transcripts
matching the fixture texts, in both framings, over h2c, h2 and mTLS; auto start/stop with its webhooks."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypercorn.asyncio import serve
from hypercorn.config import Config
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from koe.config import Settings
from koe.engines.registry import Engines, load_engines
from koe.sim.sora.channel import ChannelSettings
from koe.sim.sora.gateway_client import TLSOptions
from koe.sim.sora.simulator import SimulatorOptions, SoraSimulator
from tests.conftest import AUDIO
from tests.server.sora.support import make_pki, running_gateway
from tests.wer import wer

SOURCES = {"utterance": "utterance_48k.wav", "short": "short_16k.wav", "reply": "reply_48k_opus.ogg"}
MAX_WER = 0.2
SPEED = 8.0


@pytest.fixture(scope="module")
def speech_engines() -> Engines:
    engines = load_engines(Settings(), ["vad", "stt"])
    assert all(s.loaded for s in engines.status.values()), engines.status
    return engines


@pytest.mark.models
@pytest.mark.parametrize("framing", ["header", "raw"])
@pytest.mark.parametrize("transport", ["h2c", "h2", "mtls"])
async def test_three_connections_transcribed(
    speech_engines: Engines, texts: dict[str, str], tmp_path: Path, framing: str, transport: str
) -> None:
    pki = make_pki(tmp_path)
    tls_settings: dict[str, Any] = {}
    tls = None
    if transport != "h2c":
        tls_settings = {"https": True, "tls_fullchain_file": pki["server_pem"], "tls_privkey_file": pki["server_key"]}
        tls = TLSOptions(str(pki["server_ca_pem"]))
    if transport == "mtls":
        tls_settings["tls_verify_cacert_path"] = pki["client_ca_pem"]
        tls = TLSOptions(str(pki["server_ca_pem"]), str(pki["client_pem"]), str(pki["client_key"]))
    async with running_gateway(
        speech_engines, service="koe", audio_streaming_header=framing == "header", **tls_settings
    ) as gateway:
        scheme = "http" if transport == "h2c" else "https"
        sim = SoraSimulator(
            SimulatorOptions(f"{scheme}://127.0.0.1:{gateway.port}", framing=framing, tls=tls, speed=SPEED)  # type: ignore[arg-type]
        )
        await sim.create_session("sora", audio_streaming=True)
        watcher = await sim.connect("sora", role="recvonly")
        ids = {}
        for name, file in SOURCES.items():
            ids[name] = await sim.connect("sora", language_code="en-US", source=AUDIO / file)
        await sim.wait_idle(60)
        await sim.close()
    assert len(sim.records) == 3
    for name, connection_id in ids.items():
        (record,) = [r for r in sim.records if r.connection_id == connection_id]
        assert record.status == 200
        assert record.error is None
        finals = [r for r in record.results if r["is_final"]]
        transcript = " ".join(r["message"] for r in finals)
        assert wer(texts[name], transcript) <= MAX_WER, (name, transcript)
        for result in record.results:
            assert result["type"] == "koe"
            assert result["channel_id"] == "sora"
            assert result["connection_id"] == connection_id
            assert result["language"] == "en-US"
            assert 0 <= result["start_ms"] <= result["end_ms"]
        # Every result went to every subscriber (all connections subscribe by default), the recvonly one included.
        pushed = [p["data"]["result"] for p in sim.pushes[watcher] if p["data"]["connection_id"] == connection_id]
        assert pushed == record.results
        assert sim.pushes[watcher][0]["type"] == "push"
        assert sim.pushes[watcher][0]["data"]["type"] == "audio_streaming_result"


@pytest.mark.models
async def test_an_unsupported_language_is_refused_on_speech_but_not_on_test(speech_engines: Engines) -> None:
    # Cantonese came with Whisper large-v3: the default models (tiny.en and base) cannot transcribe it, so /speech
    # says so with a 400, and /test (which transcribes nothing) takes it.
    async with running_gateway(speech_engines, service="koe", audio_streaming_header=True) as gateway:
        url = f"http://127.0.0.1:{gateway.port}"
        for path, status in (("/speech", 400), ("/test", 200)):
            sim = SoraSimulator(SimulatorOptions(url, path=path, speed=50))
            await sim.create_session("sora", audio_streaming=True)
            await sim.connect("sora", language_code="yue-HK", source=AUDIO / "short_16k.wav")
            await sim.wait_idle(30)
            await sim.close()
            (record,) = sim.records
            assert record.status == status
    assert gateway.metrics.requests[(("path", "/speech"), ("status", "400"))] == 1


@pytest.fixture
async def webhook_receiver() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    async def hook(request: Request) -> JSONResponse:
        received.append(await request.json())
        return JSONResponse({})

    app = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    stop = asyncio.Event()
    task = asyncio.get_running_loop().create_task(serve(app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
    await asyncio.sleep(0.3)
    yield f"http://127.0.0.1:{port}/hook", received
    stop.set()
    await task


@pytest.mark.models
async def test_auto_start_and_stop_by_subscribing(
    speech_engines: Engines, texts: dict[str, str], webhook_receiver: tuple[str, list[dict[str, Any]]]
) -> None:
    hook_url, hooks = webhook_receiver
    async with running_gateway(speech_engines, service="koe", audio_streaming_header=True) as gateway:
        options = SimulatorOptions(
            f"http://127.0.0.1:{gateway.port}",
            speed=SPEED,
            event_webhook_url=hook_url,
            channel=ChannelSettings(default_audio_streaming_result_push=False),
            on_source_end="idle",
        )
        sim = SoraSimulator(options)
        await sim.create_session("sora", audio_streaming=True, audio_streaming_auto=True)
        speaker = await sim.connect("sora", language_code="en-US", source=AUDIO / "short_16k.wav")
        listener = await sim.connect("sora", role="recvonly")
        assert sim.records == []  # nobody subscribes: nothing is streamed
        assert gateway.metrics.streams_active == 0
        await sim.subscribe("sora", listener)  # 0 → 1 subscriber: streaming starts
        while not any(p["data"]["result"].get("is_final") for p in sim.pushes[listener]):
            await asyncio.wait_for(sim.push_events.get(), 30)
        assert gateway.metrics.streams_active == 1
        await sim.unsubscribe("sora", listener)  # 1 → 0: streaming stops, the request ends
        await sim.wait_idle(30)
        assert gateway.metrics.streams_active == 0
        await sim.close()
    (record,) = sim.records
    assert record.connection_id == speaker
    assert wer(texts["short"], record.results[-1]["message"]) <= MAX_WER
    assert [h["type"] for h in hooks] == ["audio-streaming.started", "audio-streaming.stopped"]
    started, stopped = hooks
    assert started["data"]["audio_streaming_auto"] is True
    assert "audio_streaming_stopped_timestamp" not in started["data"]
    assert stopped["data"]["audio_streaming_started_timestamp"] == started["data"]["audio_streaming_started_timestamp"]
    assert stopped["data"]["audio_streaming_stopped_timestamp"] >= stopped["data"]["audio_streaming_started_timestamp"]
    for hook in hooks:
        assert hook["channel_id"] == "sora"
        assert hook["label"] == "WebRTC SFU Sora"
        assert hook["multistream"] is True
        assert hook["session_id"]
        assert hook["max_connections"] == hook["total_connections"] == 2
        assert hook["version"]
        assert hook["id"]
