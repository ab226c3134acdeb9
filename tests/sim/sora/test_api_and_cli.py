"""The simulator's Sora-style HTTP API and `koe sora-sim`, against koe's gateway with the `test` service."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import httpx

from koe.sim.sora.api import api_app
from koe.sim.sora.simulator import SimulatorOptions, SoraSimulator
from tests.conftest import AUDIO
from tests.server.sora.support import running_gateway

SORA_TARGET = "Sora_20250101."


async def _call(client: httpx.AsyncClient, target: str, body: dict[str, Any]) -> httpx.Response:
    return await client.post("/", json=body, headers={"x-sora-target": target})


async def test_drive_a_session_through_the_api() -> None:
    async with running_gateway(audio_streaming_header=True) as gateway:
        sim = SoraSimulator(
            SimulatorOptions(f"http://127.0.0.1:{gateway.port}", path="/test", speed=50, on_source_end="idle")
        )
        transport = httpx.ASGITransport(app=api_app(sim))
        async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
            created = await _call(client, "KoeSoraSim.CreateSession", {"channel_id": "sora"})
            assert created.status_code == 200
            refused = await _call(client, SORA_TARGET + "StopAudioStreaming", {"channel_id": "sora"})
            assert refused.status_code == 400
            assert refused.json()["error_type"] == "AUDIO-STREAMING-NOT-STARTED"
            body = {"channel_id": "sora", "language_code": "ja-JP", "source": str(AUDIO / "short_16k.wav")}
            speaker = (await _call(client, "KoeSoraSim.Connect", body)).json()["connection_id"]
            listener = (await _call(client, "KoeSoraSim.Connect", {"channel_id": "sora", "role": "recvonly"})).json()
            await _call(client, SORA_TARGET + "UnsubscribeAudioStreamingResultPush",
                        {"channel_id": "sora", "connection_id": speaker})  # fmt: skip
            states = await _call(client, SORA_TARGET + "ListAudioStreamingResultPushState", {"channel_id": "sora"})
            assert states.json() == [
                {"connection_id": speaker, "subscribe": False},
                {"connection_id": listener["connection_id"], "subscribe": True},
            ]
            assert (await _call(client, SORA_TARGET + "StartAudioStreaming", {"channel_id": "sora"})).json() == {}
            while len(sim.pushes[listener["connection_id"]]) < 50:
                await asyncio.wait_for(sim.push_events.get(), 10)
            assert (await _call(client, SORA_TARGET + "StopAudioStreaming", {"channel_id": "sora"})).status_code == 200
            await sim.wait_idle(10)
            # StopAudioStreaming resets every connection's push state to the default (true).
            states = await _call(client, SORA_TARGET + "ListAudioStreamingResultPushState", {"channel_id": "sora"})
            assert all(s["subscribe"] for s in states.json())
            pushes = (await _call(client, "KoeSoraSim.GetPushes", {"connection_id": listener["connection_id"]})).json()
            assert pushes[0] == {
                "type": "push",
                "data": {
                    "type": "audio_streaming_result",
                    "connection_id": speaker,
                    "result": {"channel_id": "ch_0", "message": f"n: {pushes[0]['data']['result']['message'][3:]}",
                               "type": "test"},
                },
            }  # fmt: skip
            assert (await _call(client, "KoeSoraSim.GetPushes", {"connection_id": speaker})).json() == []
            (record,) = (await _call(client, "KoeSoraSim.GetRecords", {})).json()
            assert record["status"] == 200
            assert record["language_code"] == "ja-JP"
            assert len(record["results"]) == record["packets_sent"]
            unknown = await _call(client, "Sora_2025.Nope", {})
            assert unknown.status_code == 400
            assert unknown.json()["error_type"] == "UNKNOWN-TARGET"
            missing = await _call(client, SORA_TARGET + "StartAudioStreaming", {})
            assert missing.json()["message"] == "channel_id is required"
        await sim.close()
    assert [w["type"] for w in sim.webhooks] == ["audio-streaming.started", "audio-streaming.stopped"]


async def test_cli_streams_files_and_records_them(tmp_path: Path) -> None:
    out = tmp_path / "records.json"
    async with running_gateway(audio_streaming_header=False) as gateway:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "koe", "sora-sim", f"http://127.0.0.1:{gateway.port}", "--path", "/test",
            "--framing", "raw", "--speed", "50", "--language", "ja-JP",
            "--source", str(AUDIO / "short_16k.wav"), "--source", str(AUDIO / "reply_48k_opus.ogg"), "--out", str(out),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode()
    lines = [json.loads(line) for line in stdout.decode().splitlines()]
    summary = json.loads(stderr.decode().strip().splitlines()[-1])
    assert [s["status"] for s in summary["streams"]] == [200, 200]
    assert (
        len(lines)
        == sum(s["results"] for s in summary["streams"])
        == sum(s["packets_sent"] for s in summary["streams"])
    )
    assert all(line["data"]["result"]["type"] == "test" for line in lines)
    records = json.loads(out.read_text())
    assert [w["type"] for w in records["webhooks"]] == ["audio-streaming.started", "audio-streaming.stopped"]
    # The Ogg source is forwarded packet for packet: its sizes come back from the test service.
    ogg = [r for r in records["streams"] if r["packets_sent"] > 200]
    assert ogg


async def test_recorded_packets_match_what_the_gateway_dumped() -> None:
    async with running_gateway(audio_streaming_header=True) as gateway:
        options = SimulatorOptions(f"http://127.0.0.1:{gateway.port}", path="/dump", speed=50, record_packets=True)
        sim = SoraSimulator(options)
        await sim.create_session("sora", audio_streaming=True)
        await sim.connect("sora", language_code="en-US", source=AUDIO / "reply_48k_opus.ogg", connection_id="C1")
        await sim.wait_idle(20)
        await sim.close()
    (record,) = sim.records
    assert [p["sequence"] for p in record.sent] == list(range(record.packets_sent))
    assert [p["payload"] for p in record.sent] == [r["payload"] for r in record.results]
    assert {r["connection_id"] for r in record.results} == {"C1"}
