"""The Call Automation emulator against the official `azure-communication-callautomation` SDK, used as apps use it:
built from a connection string (so over HTTPS, trusting the emulator's CA), creating a call with media streaming
to a real koe server, reading call properties, stopping and starting streaming, and hanging up."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from azure.communication.callautomation import (
    CallAutomationClient,
    MediaStreamingOptions,
    PhoneNumberIdentifier,
)
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

from koe.sim.acs.callautomation import CallAutomationEmulator
from koe.sim.acs.calls import CallScript, Speaker
from koe.sim.acs.participants import phone_raw_id
from tests.server.acs.support import acs_settings, koe_server

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def emulator(tmp_path: Path) -> AsyncIterator[CallAutomationEmulator]:
    emu = CallAutomationEmulator()
    await emu.start(tls_dir=tmp_path)
    tone = (np.sin(np.arange(8000) / 16000 * 2 * np.pi * 300) * 5000).astype(np.int16)
    emu.outbound_script = CallScript([Speaker(phone_raw_id(5), tone, 16000)], speed=4.0, hang_up_when_done=False)
    yield emu
    await emu.stop()


def _client(emu: CallAutomationEmulator, key: str | None = None) -> CallAutomationClient:
    conn = emu.connection_string if key is None else f"endpoint={emu.endpoint};accesskey={key}"
    return CallAutomationClient.from_connection_string(conn, connection_verify=str(emu.ca_file))


async def test_official_sdk_drives_a_call_with_media(emulator: CallAutomationEmulator) -> None:
    async with koe_server(acs_settings(mode="echo")) as (base, _app):
        client = _client(emulator)
        media = MediaStreamingOptions(
            transport_url=base.replace("http", "wss") + "/acs/media",  # samples force wss://; loopback downgrades
            transport_type="websocket",
            content_type="audio",
            audio_channel_type="mixed",
            start_media_streaming=False,
            enable_bidirectional=True,
            audio_format="Pcm24KMono",  # the 1.4.0b1 spelling: enums compare case-insensitively
        )
        created = await asyncio.to_thread(
            client.create_call,
            PhoneNumberIdentifier("+15550100005"),
            base + "/acs/callbacks",
            source_caller_id_number=PhoneNumberIdentifier("+15550109999"),
            media_streaming=media,
            operation_context="createCtx",
        )
        call = emulator.calls[created.call_connection_id]
        connection = client.get_call_connection(created.call_connection_id)
        properties = await asyncio.to_thread(connection.get_call_properties)
        assert properties.call_connection_state == "connected"
        assert properties.targets[0].raw_id == "4:+15550100005"
        assert properties.source is not None
        assert properties.media_streaming_subscription is not None
        assert properties.media_streaming_subscription.state == "inactive"

        await asyncio.to_thread(connection.start_media_streaming, operation_context="startCtx")
        await call.wait_for("MediaStreamingStarted")
        properties = await asyncio.to_thread(connection.get_call_properties)
        assert properties.media_streaming_subscription.state == "active"
        with pytest.raises(HttpResponseError) as info:
            await asyncio.to_thread(connection.start_media_streaming)
        assert info.value.status_code == 400
        await asyncio.to_thread(connection.stop_media_streaming, operation_context="stopCtx")
        await call.wait_for("MediaStreamingStopped")
        await asyncio.to_thread(connection.hang_up, False)
        await call.wait_for("CallDisconnected")
    assert call.rest == [
        "create",
        "get",
        "startMediaStreaming",
        "get",
        "startMediaStreaming",
        "stopMediaStreaming",
        "delete",
    ]
    assert call.media is not None
    assert call.media.rate == 24000
    report = call.media_reports[0]
    assert report.rate == 24000
    assert report.frames_sent > 0
    assert report.violations == []


async def test_a_wrong_key_is_refused(emulator: CallAutomationEmulator) -> None:
    client = _client(emulator, key="d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmc=")
    with client, pytest.raises((ClientAuthenticationError, HttpResponseError)) as info:
        await asyncio.to_thread(client.get_call_connection("nope").get_call_properties)
    assert info.value.status_code == 401


async def test_unknown_calls_and_bad_answers_get_acs_like_errors(emulator: CallAutomationEmulator) -> None:
    client = _client(emulator)
    with pytest.raises(HttpResponseError) as info:
        await asyncio.to_thread(client.get_call_connection("nope").get_call_properties)
    assert info.value.status_code == 404
    with pytest.raises(HttpResponseError) as info:
        await asyncio.to_thread(client.answer_call, "not-a-context", "http://127.0.0.1:9/cb")
    client.close()
    assert info.value.status_code == 400
    assert "incomingCallContext" in str(info.value)
