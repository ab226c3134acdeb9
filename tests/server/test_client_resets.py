"""A client resets its TCP connection while audio streams (issue 14, must-hold 2): on every door the session ends at
once (`koe_sessions_active` back where it was, the Sora stream counted as a client reset), another session streaming
beside it goes on undisturbed, and the server keeps serving (`/healthz`). A reset is an RST: the socket closed with
SO_LINGER 0, no close frame, no END_STREAM."""

from __future__ import annotations

import asyncio
import base64
import socket
import struct
from collections.abc import Callable

import httpx
import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection, connect

from koe.config import load_settings
from koe.engines.registry import Engines
from koe.protocols.acs import AudioData, AudioMetadata, encode, iso_timestamp
from koe.server.metrics import METRICS
from tests.server.acs.support import koe_server
from tests.server.realtime.support import API_KEY, realtime_settings
from tests.server.sora.support import connect as sora_connect
from tests.server.sora.support import fixture_packets, framed, post, running_gateway

WAIT_S = 20.0
TONE = (np.sin(np.arange(320) * 0.2) * 6000).astype("<i2").tobytes()


def _active(door: str) -> float:
    return METRICS.registry.get_sample_value("koe_sessions_active", {"door": door}) or 0.0


async def _until(condition: Callable[[], bool]) -> None:
    for _ in range(int(WAIT_S / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the condition did not come true in time")


def _reset(ws: ClientConnection) -> None:
    """An RST, as a crashed client or a dropped network leaves behind."""
    sock = ws.transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    ws.transport.abort()


async def _echo_call(url: str, call_id: str) -> ClientConnection:
    ws = await connect(url, additional_headers={"x-ms-call-connection-id": call_id})
    await ws.send(encode(AudioMetadata(call_id, 16000)))
    return ws


async def test_an_acs_caller_that_resets_mid_call_ends_only_its_own_call() -> None:
    # A reset is a lost stream, which ACS would reconnect: the call ends once `reconnect_grace_s` has passed.
    settings = load_settings(overrides={"acs": {"mode": "echo", "reconnect_grace_s": 0.5}})
    async with koe_server(settings, Engines()) as (base, app):
        url = base.replace("http", "ws") + "/acs/media"
        healthy, doomed = await _echo_call(url, "healthy"), await _echo_call(url, "doomed")
        frame = encode(AudioData(TONE, iso_timestamp(1_700_000_000.0)))
        for _ in range(25):  # both stream; both get their echo
            await healthy.send(frame)
            await doomed.send(frame)
            await asyncio.sleep(0.02)
        await asyncio.wait_for(healthy.recv(), WAIT_S)
        _reset(doomed)
        calls = app.state.calls
        await _until(lambda: (call := calls.get("doomed")) is not None and call.ended_at is not None)
        for _ in range(25):  # the other call streams on, and is echoed
            await healthy.send(frame)
            await asyncio.sleep(0.02)
        echoed = [await asyncio.wait_for(healthy.recv(), WAIT_S) for _ in range(10)]
        assert len(echoed) == 10
        assert calls.get("healthy").ended_at is None
        async with httpx.AsyncClient(base_url=base) as client:
            assert (await client.get("/healthz")).status_code == 200
        await healthy.close()


@pytest.mark.models
async def test_a_realtime_client_that_resets_while_streaming_audio_ends_its_session(engines: Engines) -> None:
    async with koe_server(realtime_settings(), engines) as (base, _app):
        url = f"ws{base[4:]}/v1/realtime?model=m"
        before = _active("realtime")
        healthy = await connect(url, additional_headers={"api-key": API_KEY})
        doomed = await connect(url, additional_headers={"api-key": API_KEY})
        pcm = base64.b64encode(np.tile(np.frombuffer(TONE, dtype="<i2"), 3).astype("<i2").tobytes()).decode()
        append = f'{{"type":"input_audio_buffer.append","audio":"{pcm}"}}'
        for _ in range(25):
            await doomed.send(append)
            await healthy.send(append)
            await asyncio.sleep(0.02)
        await _until(lambda: _active("realtime") == before + 2)
        _reset(doomed)
        await _until(lambda: _active("realtime") == before + 1)  # the reset session is gone at once
        await healthy.send('{"type":"session.update","session":{"type":"realtime","instructions":"still here"}}')
        for _ in range(50):
            event = await asyncio.wait_for(healthy.recv(), WAIT_S)
            if '"session.updated"' in str(event):
                break
        else:
            raise AssertionError("the healthy session did not answer")
        await healthy.close()
        await _until(lambda: _active("realtime") == before)


async def test_a_sora_node_that_resets_mid_stream_is_counted_and_the_next_connection_is_served() -> None:
    async with running_gateway(service="test", audio_streaming_header=True) as gateway:
        doomed = await sora_connect(gateway)
        stream = await post(doomed, "/test", framed(fixture_packets()[:5]), end=False)
        await stream.response()
        doomed.writer.transport.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
        )
        await doomed.abort()
        await _until(lambda: gateway.metrics.client_resets == 1 and gateway.metrics.streams_active == 0)
        fresh = await sora_connect(gateway)
        served = await post(fresh, "/test", framed(fixture_packets()[:2]))
        await served.closed(WAIT_S)
        await fresh.close()
    assert served.status == 200
    assert len(served.text_results()) == 2
