"""The ACS door's protocol handling, driven by the ACS simulator against a real koe server in echo mode (no
models needed): handshake, mixed and unmixed at 16 and 24 kHz, malformed and out-of-order frames, violations."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from websockets.asyncio.client import connect

from koe.protocols.acs import AudioData, AudioMetadata, encode, iso_timestamp
from koe.sim.acs.media import MediaOptions, MediaStream
from koe.sim.acs.participants import CallAudio, Participant, acs_raw_id, phone_raw_id
from tests.server.acs.support import acs_settings, koe_server

pytestmark = pytest.mark.timeout(60)


def _speech(ms: int, rate: int, freq: float = 300.0) -> np.ndarray:
    t = np.arange(rate * ms // 1000) / rate
    return (np.sin(2 * np.pi * freq * t) * 6000).astype(np.int16)


@pytest.mark.parametrize("rate", [16000, 24000])
@pytest.mark.parametrize("mixed", [True, False])
async def test_echo_mode_plays_the_call_back(rate: int, mixed: bool) -> None:
    people = [
        Participant(phone_raw_id(1), _speech(400, rate, 300)),
        Participant(acs_raw_id(), _speech(400, rate, 500), start_ms=200),
        Participant(phone_raw_id(2), _speech(400, rate, 700), start_ms=600),
    ]
    audio = CallAudio(people, rate, mixed=mixed)
    async with koe_server(acs_settings(mode="echo")) as (base, app):
        url = base.replace("http", "ws") + "/acs/media/call-echo?mode=echo"
        options = MediaOptions(url, rate, call_connection_id="cc-echo", speed=4.0, linger_ms=200)
        report = await MediaStream(options, audio).run()
        call = app.state.calls.get("cc-echo")
    assert report.violations == []
    sent_ms = audio.duration_ms
    assert report.outbound_audio_bytes == pytest.approx(sent_ms * rate // 1000 * 2, rel=0.15)
    assert call is not None
    assert call.info["sample_rate"] == rate
    assert call.info["stream"]["audio_frames"] == report.frames_sent * (1 if mixed else 3)
    assert call.state == "ended"


async def test_malformed_oversize_odd_and_out_of_order_frames_are_skipped_and_the_call_goes_on() -> None:
    async with koe_server(acs_settings(mode="echo")) as (base, app):
        url = base.replace("http", "ws") + "/acs/media"
        headers = {"x-ms-call-connection-id": "cc-bad"}
        async with connect(url, additional_headers=headers) as ws:
            await ws.send(encode(AudioMetadata("sub", 16000)))
            now = 1_700_000_000.0
            await ws.send(encode(AudioData(bytes(640), iso_timestamp(now + 0.04))))
            await ws.send("{not json")
            await ws.send(json.dumps({"kind": "AudioData", "audioData": {"data": "A" * 200_000}}))
            await ws.send('{"kind":"AudioData","audioData":{"data":"AA==","timestamp":"x"}}')
            await ws.send(encode(AudioData(bytes(640), iso_timestamp(now))))  # older than the previous frame
            await ws.send('{"kind":"SomethingNew","somethingNew":{}}')
            await ws.send(encode(AudioData(bytes(640), iso_timestamp(now + 0.06))).encode())  # binary JSON is fine
            replies = [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(2)]
            assert all(r["Kind"] == "AudioData" for r in replies)
        await asyncio.sleep(0.1)
        call = app.state.calls.get("cc-bad")
    assert call is not None
    stats = call.info["stream"]
    assert stats["audio_frames"] == 2
    assert stats["malformed"] == 4
    assert stats["out_of_order"] == 1
    assert stats["unknown_kinds"] == {"SomethingNew": 1}


@pytest.mark.parametrize(
    ("first", "code", "reason"),
    [
        (encode(AudioData(bytes(640), "2024-11-15T19:16:12.925Z")), 1008, "AudioData before AudioMetadata"),
        (encode(AudioMetadata("s", 8000)), 1003, "unsupported sampleRate 8000"),
    ],
)
async def test_protocol_violations_close_with_a_code_and_reason(first: str, code: int, reason: str) -> None:
    async with koe_server(acs_settings(mode="echo")) as (base, _app):
        url = base.replace("http", "ws") + "/acs/media"
        async with connect(url) as ws:
            await ws.send(first)
            with pytest.raises(Exception):  # noqa: B017, PT011  # the close itself is what we check
                await asyncio.wait_for(ws.recv(), 5)
            assert ws.close_code == code
            assert ws.close_reason is not None
            assert reason in ws.close_reason
        # the server keeps serving other calls
        audio = CallAudio([Participant(phone_raw_id(1), _speech(100, 16000))], 16000)
        report = await MediaStream(MediaOptions(url + "?mode=echo", 16000, speed=0), audio).run()
        assert report.closed_by == "simulator"


async def test_a_non_loopback_client_without_a_key_is_refused_before_the_upgrade() -> None:
    settings = acs_settings(mode="echo")
    settings.server.api_keys = []
    from pydantic import SecretStr

    settings.server.api_keys.append(SecretStr("k1"))
    async with koe_server(settings) as (base, _app):
        url = base.replace("http", "ws") + "/acs/media"
        audio = CallAudio([Participant(phone_raw_id(1), _speech(100, 16000))], 16000)
        from koe.sim.acs.media import MediaConnectError

        with pytest.raises(MediaConnectError) as info:
            await MediaStream(MediaOptions(url, 16000, speed=0), audio).run()
        assert info.value.status == 401
        report = await MediaStream(MediaOptions(url + "?api-key=k1", 16000, speed=0), audio).run()
        assert report.frames_sent == 5


async def test_routes_choose_the_mode_and_an_unavailable_mode_closes_with_1011() -> None:
    settings = acs_settings(mode="transcribe", routes=[{"path": "/acs/line-test", "mode": "echo"}])
    audio = CallAudio([Participant(phone_raw_id(1), _speech(200, 16000))], 16000)
    async with koe_server(settings) as (base, _app):  # no engines loaded: transcribe cannot run
        ws = base.replace("http", "ws")
        echoed = await MediaStream(MediaOptions(f"{ws}/acs/line-test/call-9", 16000, speed=0), audio).run()
        assert echoed.outbound_audio_bytes > 0
        refused = await MediaStream(MediaOptions(f"{ws}/acs/media", 16000, speed=0), audio).run()
        assert refused.closed_by == "server"
        assert refused.close_code == 1011
        assert refused.close_reason == "transcribe mode unavailable"
