"""The Call Automation path end to end: the emulator (over HTTPS, with its own CA and JWKS) rings koe through Event
Grid; koe answers with the official SDK; media flows to koe's door; callbacks update the call; koe's REST API stops
and restarts streaming with an operationContext; the hang-up ends the call. Echo mode, so no models are needed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import pytest

from koe.config import Settings, load_settings
from koe.sim.acs.callautomation import CallAutomationEmulator
from koe.sim.acs.calls import CallScript, Speaker
from koe.sim.acs.media import MediaConnectError, MediaOptions, MediaStream
from koe.sim.acs.participants import CallAudio, Participant, acs_raw_id, phone_raw_id
from koe.sim.acs.tokens import SigningKey
from tests.server.acs.support import koe_server

pytestmark = pytest.mark.timeout(90)


def _speech(ms: int, rate: int = 16000) -> np.ndarray:
    t = np.arange(rate * ms // 1000) / rate
    return (np.sin(2 * np.pi * 300 * t) * 6000).astype(np.int16)


@pytest.fixture
async def emulator(tmp_path: Path) -> AsyncIterator[CallAutomationEmulator]:
    emu = CallAutomationEmulator()
    await emu.start(tls_dir=tmp_path / "tls")
    yield emu
    await emu.stop()


def _settings(emu: CallAutomationEmulator, **acs: object) -> Settings:
    assert emu.ca_file is not None
    jwt = {"enabled": True, "jwks_url": emu.endpoint + "calling/keys", "audience": emu.resource_id}
    jwt["ca_file"] = str(emu.ca_file)
    base = {"mode": "echo", "connection_string": emu.connection_string, "ca_file": str(emu.ca_file), "jwt": jwt}
    return load_settings(overrides={"acs": {**base, **acs}})


async def test_incoming_call_answer_media_callbacks_stop_start_and_hang_up(emulator: CallAutomationEmulator) -> None:
    settings = _settings(emulator, audio_format="pcm24KMono", audio_channel_type="unmixed")
    speakers = [Speaker(phone_raw_id(1), _speech(600), 16000), Speaker(acs_raw_id(), _speech(600), 16000, 300)]
    script = CallScript(speakers, speed=4.0, hang_up_when_done=False, linger_ms=300)
    async with koe_server(settings) as (base, app), httpx.AsyncClient(base_url=base) as http:
        call = await emulator.ring(base + "/acs/events", script)
        await call.wait_for("MediaStreamingStarted")
        assert call.rest[0] == "answer"
        assert call.media is not None
        assert call.media.rate == 24000
        assert not call.media.mixed
        assert call.media.transport_url == base.replace("http", "ws") + "/acs/media"
        call_id = call.call_connection_id

        await _until(
            lambda: app.state.calls.get(call_id) is not None and _info(app, call_id).get("media_streaming") == "started"
        )
        listed = (await http.get("/v1/calls")).json()["calls"]
        assert [c["id"] for c in listed] == [call_id]

        # the first stream plays out, koe echoes it, then the caller's script ends its media
        assert call.stream_task is not None
        await call.stream_task
        report = call.media_reports[0]
        assert report.outbound_audio_bytes > 0
        assert report.violations == []

        # The restarted stream talks for 20 s at real time, so it is still running when the stop comes, however
        # loaded the machine (a stream that ended by itself is one ACS refuses to stop: 8583).
        call.script = replace(script, speakers=[Speaker(phone_raw_id(1), _speech(20000), 16000)], speed=1.0)
        stopped = await http.post(f"/v1/calls/{call_id}/media/start", json={"operationContext": "startCtx"})
        assert stopped.status_code == 202
        await _until(lambda: call.streaming == "started")
        response = await http.post(f"/v1/calls/{call_id}/media/stop", json={"operationContext": "stopCtx"})
        assert response.status_code == 202
        await _until(lambda: call.callback_types().count("MediaStreamingStopped") == 2)
        await _until(lambda: _info(app, call_id).get("last_operation_context") == "stopCtx")
        assert _info(app, call_id)["media_streaming"] == "stopped"

        response = await http.post(f"/v1/calls/{call_id}/hangup")
        assert response.status_code == 202
        await call.wait_for("CallDisconnected")
        await _until(lambda: app.state.calls.get(call_id).state == "ended")
        snapshot = (await http.get(f"/v1/calls/{call_id}")).json()
    assert snapshot["info"]["call_connection_state"] == "disconnected"
    assert call.callback_types() == [
        "CallConnected",
        "ParticipantsUpdated",
        "MediaStreamingStarted",
        "MediaStreamingStopped",
        "MediaStreamingStarted",
        "MediaStreamingStopped",
        "CallDisconnected",
    ]
    assert all(status == 200 for _, status in call.callbacks)
    assert "get" not in call.rest or call.rest.count("answer") == 1
    assert emulator.errors == []


async def test_media_streaming_failed_when_the_transport_is_unreachable(emulator: CallAutomationEmulator) -> None:
    settings = _settings(emulator, transport_url="ws://127.0.0.1:9/nothing")
    script = CallScript([Speaker(phone_raw_id(1), _speech(200), 16000)], speed=4.0)
    async with koe_server(settings) as (base, app):
        call = await emulator.ring(base + "/acs/events", script)
        await call.wait_for("MediaStreamingFailed")
        await _until(lambda: _info(app, call.call_connection_id).get("media_streaming") == "failed")
        error = _info(app, call.call_connection_id)["media_streaming_error"]
    assert error["subCode"] == 8581


async def test_jwt_accepted_and_rejected(emulator: CallAutomationEmulator) -> None:
    settings = _settings(emulator)
    audio = CallAudio([Participant(phone_raw_id(1), _speech(100))], 16000)
    async with koe_server(settings) as (base, _app):
        url = base.replace("http", "ws") + "/acs/media"
        good = emulator.signing_key.sign(emulator.resource_id)
        report = await MediaStream(MediaOptions(url, 16000, token=good, speed=0), audio).run()
        assert report.frames_sent == 5
        stranger = SigningKey(key_id=emulator.signing_key.key_id).sign(emulator.resource_id)
        cases = {
            None: 401,
            "not-a-jwt": 401,
            stranger: 401,
            emulator.signing_key.sign("some-other-resource"): 403,
            emulator.signing_key.sign(emulator.resource_id, issuer="https://evil.example"): 403,
            emulator.signing_key.sign(emulator.resource_id, lifetime_s=-3600): 401,
        }
        for token, status in cases.items():
            with pytest.raises(MediaConnectError) as info:
                await MediaStream(MediaOptions(url, 16000, token=token, speed=0), audio).run()
            assert info.value.status == status, token


async def test_event_grid_validation_and_bad_webhooks(emulator: CallAutomationEmulator) -> None:
    async with koe_server(_settings(emulator)) as (base, _app), httpx.AsyncClient(base_url=base) as http:
        response = await http.post(
            "/acs/events",
            json=[{"eventType": "Microsoft.EventGrid.SubscriptionValidationEvent", "data": {"validationCode": "abc"}}],
        )
        assert response.json() == {"validationResponse": "abc"}
        assert (await http.post("/acs/events", content=b"nope")).status_code == 415  # not sent as JSON
        typed = {"content-type": "application/cloudevents-batch+json"}
        assert (await http.post("/acs/events", content=b"nope", headers=typed)).status_code == 400
        assert (await http.post("/acs/callbacks", json=[])).status_code == 401  # callbacks must be signed
        assert (await http.post("/v1/calls/none/media/stop")).status_code == 404


def _info(app: object, call_id: str) -> dict[str, object]:
    call = app.state.calls.get(call_id)  # type: ignore[attr-defined]
    return dict(call.info) if call is not None else {}


async def _until(condition: object, timeout_s: float = 20.0) -> None:
    """Poll state owned by other tasks (the emulator's, the server's) until `condition()` holds."""
    import asyncio

    for _ in range(int(timeout_s / 0.02)):
        if condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0.02)
    raise TimeoutError("condition not met in time")
