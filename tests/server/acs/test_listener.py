"""The ACS media door on its own port (picows), driven by the ACS simulator and plain WebSocket clients next to a
real koe main port: calls reach the shared call registry, JWTs and keys are checked before the upgrade, bad frames
are skipped, violations close with the door's code and reason, and the main port's /acs/media keeps working."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from koe.engines.registry import Engines
from koe.protocols.acs import AudioData, AudioMetadata, DtmfData, encode, iso_timestamp
from koe.server.run import start_acs_media
from koe.sim.acs.media import MediaConnectError, MediaOptions, MediaStream
from koe.sim.acs.participants import CallAudio, Participant, phone_raw_id
from koe.sim.acs.tokens import SigningKey
from tests.conftest import load_wav
from tests.server.acs.support import (
    RecordingTTS,
    acs_settings,
    assert_sent_speech,
    koe_server,
    koe_with_listener,
    record_outbound,
    serve_app,
)
from tests.wer import wer

pytestmark = pytest.mark.timeout(90)

WAIT_S = 30.0
"""Generous bound on anything awaited here: the machine may be busy."""
POLL_S = 0.02


async def _until(condition: Callable[[], bool]) -> None:
    """Poll state that the server's tasks own until `condition()` holds."""
    for _ in range(int(WAIT_S / POLL_S)):
        if condition():
            return
        await asyncio.sleep(POLL_S)
    raise TimeoutError("condition not met in time")


def _tone(ms: int, rate: int = 16000) -> np.ndarray:
    t = np.arange(rate * ms // 1000) / rate
    return (np.sin(2 * np.pi * 300 * t) * 6000).astype(np.int16)


def _frame(offset_s: float, pcm: bytes = bytes(640)) -> str:
    return encode(AudioData(pcm, iso_timestamp(1_700_000_000.0 + offset_s)))


async def test_the_listener_is_off_unless_a_media_port_is_set() -> None:
    async with koe_server(acs_settings(mode="echo")) as (_base, app):
        assert await start_acs_media(app.state.settings, app.state.acs, print) is None


@pytest.mark.models
async def test_a_transcribed_call_reaches_the_call_registry(engines: Engines, texts: dict[str, str]) -> None:
    pcm, rate = load_wav("short_16k.wav")
    audio = CallAudio([Participant(phone_raw_id(1), pcm)], rate, tail_ms=300)
    async with koe_with_listener(acs_settings(mode="transcribe"), engines) as koe:
        options = MediaOptions(f"{koe.media}/acs/media", rate, call_connection_id="pw-stt", speed=4.0)
        report = await MediaStream(options, audio).run()
        registry = koe.app.state.calls
        await _until(lambda: registry.get("pw-stt") is not None and registry.get("pw-stt").state == "ended")
        call = registry.get("pw-stt")
    assert report.violations == []
    assert call.door == "acs" and call.mode == "transcribe"
    finals = list(call.transcript)
    assert len(finals) == 1, finals
    assert wer(texts["short"], finals[0]["text"]) <= 0.2, finals


@pytest.mark.models
async def test_an_agent_call_hears_koe_answer(engines: Engines) -> None:
    pcm, rate = load_wav("short_16k.wav")
    audio = CallAudio([Participant(phone_raw_id(1), pcm)], rate, tail_ms=200)
    tts = RecordingTTS(engines.tts)
    async with koe_with_listener(acs_settings(mode="agent"), replace(engines, tts=tts)) as koe:
        url = f"{koe.media}/acs/media"
        options = MediaOptions(
            url, rate, call_connection_id="pw-agent", speed=3.0, reply_timeout_ms=30000, linger_ms=1500
        )
        stream = MediaStream(options, audio)
        outbound = record_outbound(stream)
        report = await stream.run()
        call = koe.app.state.calls.get("pw-agent")
    assert report.violations == []
    assert report.outbound_audio_bytes > 0
    assert call is not None
    assert "response.started" in [event["type"] for event in call.recent]
    # What the reply says is the model's; that koe sent the audio its TTS made for that text is koe's (from its
    # start: the caller hangs up half a second of real time after the audio pauses, and koe sends the reply at the
    # pace it is played, so at three times real time the hang-up can come before the reply's end).
    said = " ".join(e["text"] for e in call.recent if e["type"] == "response.text")
    sent = assert_sent_speech(bytes(outbound), tts.chunks, rate)
    assert all(text.strip() in said for text in sent), (sent, said)


@pytest.fixture
async def jwks() -> AsyncIterator[tuple[str, SigningKey]]:
    key = SigningKey()

    async def keys(_request: Request) -> JSONResponse:
        return JSONResponse(key.jwks())

    async with serve_app(Starlette(routes=[Route("/calling/keys", keys)])) as base:
        yield base + "/calling/keys", key


async def _refusal(url: str, **headers: str) -> tuple[int, dict[str, Any]]:
    with pytest.raises(InvalidStatus) as info:
        async with connect(url, additional_headers=headers):
            pass
    response = info.value.response
    assert response.headers["content-type"] == "application/json"
    return response.status_code, json.loads(bytes(response.body or b""))


async def test_jwts_are_checked_before_the_upgrade(jwks: tuple[str, SigningKey]) -> None:
    url, key = jwks
    settings = acs_settings(mode="echo", jwt={"enabled": True, "jwks_url": url, "audience": "resource-1"})
    audio = CallAudio([Participant(phone_raw_id(1), _tone(100))], 16000)
    async with koe_with_listener(settings) as koe:
        media = f"{koe.media}/acs/media"
        # the keys are fetched while the first connection waits, as on the main port
        report = await MediaStream(MediaOptions(media, 16000, token=key.sign("resource-1"), speed=0), audio).run()
        assert report.frames_sent == 5
        assert report.closed_by == "simulator"
        with pytest.raises(MediaConnectError) as missing:
            await MediaStream(MediaOptions(media, 16000, speed=0), audio).run()
        assert missing.value.status == 401
        status, body = await _refusal(media, Authorization=f"Bearer {key.sign('someone-else')}")
        assert koe.app.state.acs.counters["rejected"] == 2
    assert status == 403
    assert body["error"]["code"] == "forbidden"
    assert "not for this resource" in body["error"]["message"]


async def test_api_keys_paths_and_modes() -> None:
    settings = acs_settings(mode="transcribe", routes=[{"path": "/acs/line-test", "mode": "echo"}])
    settings.server.api_keys = [SecretStr("k1")]
    audio = CallAudio([Participant(phone_raw_id(1), _tone(200))], 16000)
    async with koe_with_listener(settings) as koe:
        status, body = await _refusal(f"{koe.media}/acs/media?mode=echo")
        assert (status, body["error"]["code"]) == (401, "unauthorized")
        with pytest.raises(InvalidStatus) as unknown:
            async with connect(f"{koe.media}/elsewhere?api-key=k1"):
                pass
        assert unknown.value.response.status_code == 404
        # a per-call path below an extra route, in that route's mode; the call id comes from the path
        options = MediaOptions(f"{koe.media}/acs/line-test/call-9?api-key=k1", 16000, speed=0)
        options.extra_headers = {"x-ms-call-connection-id": ""}
        echoed = await MediaStream(options, audio).run()
        # the main path's mode (transcribe, no engines here) overridden by the query
        url = f"{koe.media}/acs/media?mode=echo&api-key=k1"
        overridden = await MediaStream(MediaOptions(url, 16000, speed=0), audio).run()
        call = koe.app.state.calls.get("call-9")
    assert echoed.outbound_audio_bytes > 0
    assert overridden.outbound_audio_bytes > 0
    assert call is not None and call.mode == "echo"


async def test_bad_frames_are_skipped_and_the_call_goes_on() -> None:
    async with koe_with_listener(acs_settings(mode="echo")) as koe:
        headers = {"x-ms-call-connection-id": "pw-bad"}
        async with connect(f"{koe.media}/acs/media", additional_headers=headers) as ws:
            await ws.send(encode(AudioMetadata("sub", 16000)))
            await ws.send(_frame(0.04))
            await ws.send("{not json")
            await ws.send(json.dumps({"kind": "AudioData", "audioData": {"data": "A" * 200_000}}))
            await ws.send('{"kind":"AudioData","audioData":{"data":"AA==","timestamp":"x"}}')
            await ws.send(_frame(0.0))  # older than the previous frame
            await ws.send('{"kind":"SomethingNew","somethingNew":{}}')
            await ws.send(_frame(0.06).encode())  # binary JSON is fine
            fragmented = _frame(0.08)
            await ws.send(iter([fragmented[:100], fragmented[100:400], fragmented[400:]]))  # one message, 3 frames
            replies = [json.loads(await asyncio.wait_for(ws.recv(), WAIT_S)) for _ in range(3)]
            assert [reply["Kind"] for reply in replies] == ["AudioData"] * 3
        registry = koe.app.state.calls
        await _until(lambda: registry.get("pw-bad") is not None and registry.get("pw-bad").state == "ended")
        stats = registry.get("pw-bad").info["stream"]
    assert stats["audio_frames"] == 3
    assert stats["malformed"] == 4
    assert stats["out_of_order"] == 1
    assert stats["unknown_kinds"] == {"SomethingNew": 1}


@pytest.mark.parametrize(
    ("first", "code", "reason"),
    [
        (_frame(0.0), 1008, "AudioData before AudioMetadata"),
        (encode(AudioMetadata("s", 8000)), 1003, "unsupported sampleRate 8000"),
    ],
)
async def test_protocol_violations_close_with_the_doors_code_and_reason(first: str, code: int, reason: str) -> None:
    async with koe_with_listener(acs_settings(mode="echo")) as koe:
        async with connect(f"{koe.media}/acs/media") as ws:
            await ws.send(first)
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), WAIT_S)
        assert koe.app.state.acs.counters["violations"] == 1
    assert ws.close_code == code
    assert ws.close_reason is not None and reason in ws.close_reason


async def test_a_violation_mid_call_closes_once_on_both_ports() -> None:
    """Once a call has started, the media listener takes frames in picows's callback (`deliver_directly`); a frame
    that ends the call there still closes it as the receive loop does: one violation counted, one error event, the
    door's code and reason, and the audio before it echoed."""
    async with koe_with_listener(acs_settings(mode="echo")) as koe:
        for base in (koe.main, koe.media):
            call_id = f"mid-violation-{base[-5:]}"
            headers = {"x-ms-call-connection-id": call_id}
            before = koe.app.state.acs.counters["violations"]
            async with connect(f"{base}/acs/media", additional_headers=headers) as ws:
                await ws.send(encode(AudioMetadata("sub", 16000)))
                await ws.send(_frame(0.0, _tone(20).tobytes()))
                echo = json.loads(await asyncio.wait_for(ws.recv(), WAIT_S))
                await ws.send(encode(AudioMetadata("sub", 24000)))
                with pytest.raises(ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), WAIT_S)
            assert echo["Kind"] == "AudioData", base
            assert (ws.close_code, ws.close_reason) == (
                1008,
                "sampleRate changed mid-stream; reconnect to change the format",
            )
            assert koe.app.state.acs.counters["violations"] == before + 1, base
            call = koe.app.state.calls.get(call_id)
            errors = [event for event in call.recent if event.get("code") == "protocol_violation"]
            assert len(errors) == 1, base


async def test_outbound_audio_waits_while_the_socket_is_backed_up() -> None:
    async with koe_with_listener(acs_settings(mode="echo")) as koe:
        headers = {"x-ms-call-connection-id": "pw-slow"}
        async with connect(f"{koe.media}/acs/media", additional_headers=headers) as ws:
            await ws.send(encode(AudioMetadata("sub", 16000)))
            (socket,) = koe.listener.sockets
            socket.pause_writing()  # what picows reports when the transport's buffer passes its high-water mark
            sent = [np.full(320, i + 1, dtype="<i2").tobytes() for i in range(5)]
            for i, pcm in enumerate(sent):
                await ws.send(_frame(i * 0.02, pcm))
            await ws.send(encode(DtmfData("5")))
            call = koe.app.state.calls.get("pw-slow")
            await _until(lambda: any(event["type"] == "dtmf" for event in call.recent))  # all five were handled
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(ws.recv(), 0.2)  # nothing went out while paused
            socket.resume_writing()
            replies = [json.loads(await asyncio.wait_for(ws.recv(), WAIT_S)) for _ in sent]
    assert [base64.b64decode(reply["AudioData"]["Data"]) for reply in replies] == sent


async def test_the_main_port_keeps_serving_and_shutdown_closes_calls_with_1001() -> None:
    audio = CallAudio([Participant(phone_raw_id(1), _tone(200))], 16000)
    async with koe_with_listener(acs_settings(mode="echo")) as koe:
        main = await MediaStream(MediaOptions(f"{koe.main}/acs/media/call-main", 16000, speed=0), audio).run()
        async with connect(f"{koe.media}/acs/media") as ws:
            await ws.send(encode(AudioMetadata("sub", 16000)))
            await _until(lambda: len(koe.listener.sockets) == 1)
            await koe.listener.close()
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), WAIT_S)
    assert main.outbound_audio_bytes > 0
    assert main.violations == []
    assert ws.close_code == 1001
