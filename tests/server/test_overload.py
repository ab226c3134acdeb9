"""Overload is refused, not shared (issue 14, must-hold 3): past a limit of `koe.server.limits` a new session is
turned away in its own protocol, and the sessions already running keep being served. Realtime: an `error` event
(`session_limit_reached`) then close 1013; ACS, on the main port and on the picows listener: close 1013 with the
reason; Sora: 503 with Suzu's JSON error body. No model is needed: echo, test and text sessions carry the load.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from koe.config import Settings, load_settings
from koe.engines.registry import Engines
from koe.protocols.acs import AudioData, AudioMetadata, encode, iso_timestamp
from koe.server.sora.gateway import SoraGateway
from tests.server.acs.support import koe_server
from tests.server.acs.test_listener import koe_with_listener
from tests.server.sora.support import CAPTURE_REQUEST, fixture_packets, framed, post
from tests.server.sora.support import connect as sora_connect

KEYS = ["key-a", "key-b"]
PACKETS = fixture_packets()
WAIT_S = 10.0


def _settings(**limits: Any) -> Settings:
    stt = {"max_streams": limits.pop("max_streams")} if "max_streams" in limits else {}
    return load_settings(overrides={"server": {"api_keys": KEYS}, "limits": limits, "stt": stt})


async def _realtime(base: str, key: str = KEYS[0]) -> ClientConnection:
    return await connect(f"ws{base[4:]}/v1/realtime?model=m", additional_headers={"api-key": key})


async def _first(ws: ClientConnection) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), WAIT_S))
    return event


async def _refused_realtime(ws: ClientConnection) -> tuple[dict[str, Any], int | None, str]:
    error = await _first(ws)
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(ws.recv(), WAIT_S)
    return error, ws.close_code, ws.close_reason or ""


async def _still_served(ws: ClientConnection) -> None:
    await ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime", "instructions": "Hi."}}))
    while (await _first(ws))["type"] != "session.updated":
        pass


@pytest.mark.parametrize(
    ("limits", "third_key", "limit"),
    [
        ({"realtime_sessions": 2}, KEYS[1], "limits.realtime_sessions"),
        ({"sessions_per_key": 2}, KEYS[0], "limits.sessions_per_key"),
        ({"max_streams": 2}, KEYS[1], "stt.max_streams"),
    ],
)
async def test_realtime_refuses_with_an_error_event_then_1013(
    limits: dict[str, Any], third_key: str, limit: str
) -> None:
    async with koe_server(_settings(**limits), Engines()) as (base, _app):
        running = [await _realtime(base) for _ in range(2)]
        for ws in running:
            assert (await _first(ws))["type"] == "session.created"
        refused = await _realtime(base, third_key)
        error, code, reason = await _refused_realtime(refused)
        assert error["type"] == "error"
        assert (error["error"]["type"], error["error"]["code"]) == ("server_error", "session_limit_reached")
        assert limit in error["error"]["message"]
        assert (code, reason) == (1013, "session_limit_reached")
        for ws in running:  # the sessions already running are untouched
            await _still_served(ws)
        await running[0].close()
        for _ in range(int(WAIT_S / 0.02)):  # its place is free again once koe has seen it go
            again = await _realtime(base, third_key)
            if (await _first(again))["type"] == "session.created":
                break
            await again.close()
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the freed place was never given again")
        await _still_served(again)
        for ws in (running[1], again):
            await ws.close()


async def _acs_call(url: str) -> ClientConnection:
    ws = await connect(url)
    await ws.send(encode(AudioMetadata("sub", 16000)))
    return ws


async def _echoes(ws: ClientConnection) -> None:
    """An echo call answers a frame with a frame: it is being served."""
    await ws.send(encode(AudioData(bytes(640), iso_timestamp(1_700_000_000.0))))
    reply = json.loads(await asyncio.wait_for(ws.recv(), WAIT_S))
    assert {k.lower(): v for k, v in reply.items()}["kind"] == "AudioData"


async def test_acs_refuses_with_1013_and_the_reason_on_both_ports() -> None:
    settings = load_settings(overrides={"acs": {"mode": "echo"}, "limits": {"acs_sessions": 1}})
    async with koe_with_listener(settings) as koe:
        for base in (koe.main, koe.media):
            running = await _acs_call(f"{base}/acs/media")
            await _echoes(running)
            refused = await connect(f"{base}/acs/media")
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(refused.recv(), WAIT_S)
            assert refused.close_code == 1013
            assert "limits.acs_sessions" in (refused.close_reason or "")
            await _echoes(running)
            await running.close()
            admission = koe.app.state.admission
            for _ in range(int(WAIT_S / 0.02)):  # the door sees the call end and frees its place
                if not admission.sessions["acs"]:
                    break
                await asyncio.sleep(0.02)


async def test_sora_refuses_with_503_and_a_json_body() -> None:
    access = load_settings(
        overrides={
            "sora": {"port": 0, "service": "test", "audio_streaming_header": True},
            "limits": {"sora_sessions": 1},
        }
    )
    gateway = SoraGateway(access.sora, None, None, access=access)
    await gateway.start()
    try:
        conn = await sora_connect(gateway)
        running = await post(conn, "/test", framed(PACKETS[:1]), end=False)
        assert await running.response() == 200
        refused = await post(conn, "/test", framed(PACKETS[:1]), request=CAPTURE_REQUEST, end=False)
        assert await refused.response() == 503
        await refused.closed(WAIT_S)
        body = json.loads(bytes(refused.body))
        assert body["message"] == "Service Unavailable" and "limits.sora_sessions" in body["reason"]
        await running.send(framed(PACKETS[1:2])[0])
        await running.end()
        await running.closed(WAIT_S)
        assert [r["message"] for r in running.text_results()] == ["n: 120", "n: 77"]
        # The place is free again.
        after = await post(conn, "/test", framed(PACKETS[:1]))
        await after.closed(WAIT_S)
        assert after.status == 200
        await conn.close()
    finally:
        await gateway.close()
