"""Sessions end cleanly, on koe's side too (issue 14, must-hold 7 and the client that never reads).

- At `limits.session_lifetime_s` (Realtime: `realtime.session_lifetime_s` when set) every door closes its own way:
  Realtime an `error` (`session_expired`, OpenAI's words) then close 1001; ACS close 1001 `session_expired`; Sora
  an error line, then the end of the stream.
- After `limits.idle_timeout_s` with nothing from the client: Realtime an `error` (`idle_timeout`) then 1001; ACS
  1001 `idle_timeout`.
- A client that stops reading: koe keeps at most `limits.send_buffer_bytes` unsent for it (the queued-bytes gauge
  never passes it), closes it after `limits.send_stall_s` without progress (1008 `send_stalled`, which the client
  finds once it reads again), and the session is gone (`koe_sessions_active` back where it was). Realtime, ACS on
  both ports, and `/v1/calls/{id}/events`.

No model is needed: text sessions, echo calls and Sora's test service do the talking.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from koe.config import Settings, load_settings
from koe.engines.registry import Engines
from koe.protocols.acs import AudioData, AudioMetadata, encode, iso_timestamp
from koe.server.metrics import METRICS
from koe.server.sora.gateway import SoraGateway
from tests.server.acs.support import koe_server
from tests.server.acs.test_listener import koe_with_listener
from tests.server.sora.support import connect as sora_connect
from tests.server.sora.support import fixture_packets, framed, post

WAIT_S = 20.0
BUFFER_BYTES = 64 * 1024
FRAME = encode(AudioData(bytes(640), iso_timestamp(1_700_000_000.0)))
_NOISE = random.Random(14)
NOISE_FRAMES = [encode(AudioData(_NOISE.randbytes(640), iso_timestamp(1_700_000_000.0))) for _ in range(64)]
"""What a call carries: frames that differ. The main port (Hypercorn) always accepts permessage-deflate, and with
its context kept from message to message a repeated frame costs about 19 bytes on the wire, so a deaf peer's kernel
buffers (4 MB) would take the whole echo without a send ever stalling. 64 frames span more than deflate's 32 kB
window."""


def _settings(**overrides: Any) -> Settings:
    return load_settings(overrides=overrides)


def _metric(name: str, **labels: str) -> float:
    return METRICS.registry.get_sample_value(name, labels) or 0.0


async def _closed(ws: ClientConnection) -> tuple[int | None, str, list[dict[str, Any]]]:
    """Read until the server closes: its close code, reason, and the JSON events before it."""
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + WAIT_S
    try:
        while time.monotonic() < deadline:
            events.append(json.loads(await asyncio.wait_for(ws.recv(), WAIT_S)))
    except ConnectionClosed:
        return ws.close_code, ws.close_reason or "", events
    raise AssertionError("the server did not close the connection in time")


async def _read_to_close(ws: ClientConnection) -> None:
    """Read (and drop) everything until the server's close frame."""
    with contextlib.suppress(ConnectionClosed):
        while True:
            await asyncio.wait_for(ws.recv(), WAIT_S)


# --- lifetime and idle time ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "code", "message"),
    [
        ({"realtime": {"session_lifetime_s": 1}}, "session_expired", "maximum duration of 1 seconds"),
        ({"limits": {"idle_timeout_s": 1}}, "idle_timeout", "idle for 1 s"),
    ],
)
async def test_realtime_sessions_end_with_an_error_then_1001(
    overrides: dict[str, Any], code: str, message: str
) -> None:
    async with koe_server(_settings(**overrides), Engines()) as (base, _app):
        ws = await connect(f"ws{base[4:]}/v1/realtime?model=m")
        close_code, reason, events = await _closed(ws)
    assert [e["type"] for e in events] == ["session.created", "error"]
    error = events[-1]["error"]
    assert error["code"] == code and message in error["message"]
    assert (close_code, reason) == (1001, code)


@pytest.mark.parametrize(
    ("limits", "reason"), [({"session_lifetime_s": 1}, "session_expired"), ({"idle_timeout_s": 1}, "idle_timeout")]
)
async def test_acs_calls_end_with_1001_on_both_ports(limits: dict[str, Any], reason: str) -> None:
    settings = _settings(acs={"mode": "echo"}, limits=limits)
    async with koe_with_listener(settings) as koe:
        for base in (koe.main, koe.media):
            call_id = f"call-{reason}-{base[-5:]}"
            ws = await connect(f"{base}/acs/media", additional_headers={"x-ms-call-connection-id": call_id})
            await ws.send(encode(AudioMetadata("sub", 16000)))
            started = time.monotonic()
            while reason == "session_expired" and time.monotonic() - started < 0.5:
                await ws.send(FRAME)  # a live call, still sending: only its lifetime ends it
                await asyncio.sleep(0.02)
            close_code, close_reason, _events = await _closed(ws)
            assert (close_code, close_reason) == (1001, reason), base
            call = koe.app.state.calls.get(call_id)
            await _until(lambda call=call: call.ended_at is not None)
            assert call.recent[-1] == {**call.recent[-1], "type": "call.ended", "reason": f"ended by koe: {reason}"}


async def test_sora_streams_end_with_an_error_line_at_their_lifetime() -> None:
    access = _settings(
        sora={"port": 0, "service": "test", "audio_streaming_header": True}, limits={"session_lifetime_s": 1}
    )
    gateway = SoraGateway(access.sora, None, None, access=access)
    await gateway.start()
    try:
        conn = await sora_connect(gateway)
        stream = await post(conn, "/test", framed(fixture_packets()[:1]), end=False)
        await stream.closed(WAIT_S)
        await conn.close()
    finally:
        await gateway.close()
    *_results, last = stream.text_results()
    assert last["type"] == "error" and last["reason"].startswith("SESSION-EXPIRED: Your session hit the maximum")


async def _until(condition: Callable[[], bool]) -> None:
    for _ in range(int(WAIT_S / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the condition did not come true in time")


# --- a client that stops reading ---------------------------------------------------------------------------------


async def _deaf(url: str) -> ClientConnection:
    """A WebSocket client that reads nothing: a tiny receive buffer, and the library's queue soon full."""
    host, port = url.split("//")[1].split("/")[0].split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    return await connect(url, sock=sock, max_queue=4)


async def _watch_gauge(door: str, peak: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        peak.append(_metric("koe_outbound_queued_bytes", door=door))
        await asyncio.sleep(0.005)


STALL = {"send_stall_s": 1.0, "send_buffer_bytes": BUFFER_BYTES}


async def test_a_realtime_client_that_stops_reading_is_closed_and_its_memory_stays_bounded() -> None:
    async with koe_server(_settings(limits=STALL), Engines()) as (base, _app):
        active = _metric("koe_sessions_active", door="realtime")
        stalls = _metric("koe_send_stalls_total", door="realtime")
        ws = await _deaf(f"ws{base[4:]}/v1/realtime?model=m")
        peak: list[float] = []
        stop = asyncio.Event()
        watcher = asyncio.ensure_future(_watch_gauge("realtime", peak, stop))
        update = json.dumps({"type": "session.update", "session": {"type": "realtime", "instructions": "x" * 2000}})
        with contextlib.suppress(ConnectionClosed):  # a client still sending may find the connection gone
            for _ in range(20_000):  # each answered by a session.updated of about 4 kB: 80 MB the client never reads
                await asyncio.wait_for(ws.send(update), WAIT_S)
                if _metric("koe_send_stalls_total", door="realtime") > stalls:
                    break
        await _until(lambda: _metric("koe_sessions_active", door="realtime") == active)
        stop.set()
        await watcher
        if _metric("koe_send_stalls_total", door="realtime") != stalls + 1:
            # Seen once in a full clean-clone run (passing alone and beside two busy cores): say how it ended.
            await _read_to_close(ws)
            pytest.fail(f"the session ended without a send stall: closed {ws.close_code} {ws.close_reason!r}")
        assert _metric("koe_sessions_active", door="realtime") == active  # the session is over
        assert max(peak) <= BUFFER_BYTES + 8 * 1024  # never more than the limit and one event
        assert _metric("koe_outbound_queued_bytes", door="realtime") == 0
        # Reading again, the client finds what was already on its way, then the close and why.
        await _read_to_close(ws)
        assert (ws.close_code, ws.close_reason) == (1008, "send_stalled")


async def test_an_acs_peer_that_stops_reading_is_closed_on_both_ports() -> None:
    async with koe_with_listener(_settings(acs={"mode": "echo"}, limits=STALL)) as koe:
        for base in (koe.main, koe.media):
            stalls = _metric("koe_send_stalls_total", door="acs")
            ws = await _deaf(f"{base}/acs/media")
            await ws.send(encode(AudioMetadata("sub", 16000)))
            with contextlib.suppress(ConnectionClosed):
                for index in range(20_000):  # each echoed: 17 MB back to a peer that reads none of it
                    await asyncio.wait_for(ws.send(NOISE_FRAMES[index % len(NOISE_FRAMES)]), WAIT_S)
                    if _metric("koe_send_stalls_total", door="acs") > stalls:
                        break
            await _until(lambda stalls=stalls: _metric("koe_send_stalls_total", door="acs") > stalls)
            await _read_to_close(ws)
            assert _metric("koe_send_stalls_total", door="acs") == stalls + 1, base
            assert (ws.close_code, ws.close_reason) == (1008, "send_stalled"), base


async def test_a_call_events_subscriber_that_stops_reading_is_closed() -> None:
    async with koe_server(_settings(limits=STALL), Engines()) as (base, app):
        registry = app.state.calls
        registry.open("call-1", door="acs", mode="transcribe")
        stalls = _metric("koe_send_stalls_total", door="calls")
        ws = await _deaf(f"ws{base[4:]}/v1/calls/call-1/events")
        for _ in range(int(WAIT_S / 0.01)):
            for _ in range(200):  # 800 kB a round, to a subscriber that reads nothing
                # Text that differs: permessage-deflate would send a repeated one in a few bytes (see NOISE_FRAMES).
                text = _NOISE.randbytes(2000).hex()
                registry.publish("call-1", {"type": "transcript.completed", "text": text})
            await asyncio.sleep(0.01)
            if _metric("koe_send_stalls_total", door="calls") > stalls:
                break
        assert _metric("koe_send_stalls_total", door="calls") == stalls + 1
        await _read_to_close(ws)
        assert (ws.close_code, ws.close_reason) == (1008, "send_stalled")
