"""Two koe nodes in their own processes (`python -m koe.server.benchserve node …`, what `koe serve` runs) sharing a
real redis-server on loopback: an ACS call on node A and a Sora connection on node B both show on B's `/v1/calls`;
a Call Automation stop sent to B ends A's stream; killing A ends its call on B within the TTL and leaves B's
sessions alone; a Redis restart mid-call loses no live session. Echo mode and Sora's `test` service: no models."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from koe.bench._child import Child, write_toml
from koe.bench._redis import RedisServer
from koe.net.inprocess import free_port
from koe.protocols.sora import SoraRequest, request_headers
from koe.sim.acs.callautomation import CallAutomationEmulator
from koe.sim.acs.calls import CallScript, Speaker
from koe.sim.acs.media import MediaOptions, MediaStream
from koe.sim.acs.participants import CallAudio, Participant, phone_raw_id
from koe.sim.sora.gateway_client import GatewayConnection, GatewayStream
from tests.server.cluster.support import until
from tests.server.sora.support import fixture_packets

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

TTL_S = 3.0
SORA_REQUEST = SoraRequest("sora", "SESSION00000000000000000001", "CONNECTION0000000000000001", "ja-JP")
SORA_CALL = f"sora:{SORA_REQUEST.channel_id}:{SORA_REQUEST.session_id}"


def _tone(seconds: float, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (np.sin(2 * np.pi * 300 * t) * 6000).astype(np.int16)


class Node:
    """A koe node in a child process, with an HTTP client on its main port."""

    def __init__(self, name: str, redis: RedisServer, folder: Path, acs: dict[str, Any] | None = None) -> None:
        self.name = name
        self.sora_port = free_port()
        config = {
            "server": {"log_level": "warning"},
            "cluster": {"redis_url": redis.url, "node_id": name, "node_ttl_s": TTL_S},
            "sora": {"port": self.sora_port, "service": "test"},
            "acs": {"mode": "echo", **(acs or {})},
        }
        path = write_toml(folder / f"{name}.toml", config)
        self.child = Child("node", "{port}", str(path))
        self.base = f"http://127.0.0.1:{self.child.port}"
        self.http = httpx.AsyncClient(base_url=self.base, timeout=10)

    async def calls(self) -> dict[str, dict[str, Any]]:
        response = await self.http.get("/v1/calls")
        return {call["id"]: call for call in response.json()["calls"]}

    async def call(self, call_id: str) -> dict[str, Any]:
        return dict((await self.http.get(f"/v1/calls/{call_id}")).json())

    async def cluster(self) -> dict[str, Any]:
        return dict((await self.http.get("/healthz")).json()["cluster"])

    async def close(self) -> None:
        await self.http.aclose()
        self.child.stop()


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.close()


@contextlib.asynccontextmanager
async def two_nodes(redis: RedisServer, folder: Path, acs: dict[str, Any] | None = None) -> AsyncIterator[list[Node]]:
    started: list[Node] = []
    try:
        for name in ("a", "b"):
            started.append(Node(name, redis, folder, acs))
        for node in started:
            await _poll(node, lambda status: status["redis"] == "up", Node.cluster)
        yield started
    finally:
        for node in started:
            await node.close()


async def _poll(node: Node, check: Any, read: Any, timeout_s: float = 15.0) -> Any:
    """Read `read(node)` until `check` holds for it; return what was read."""
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(httpx.HTTPError, KeyError):
            value = await read(node)
            if check(value):
                return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"node {node.name}: condition not met in time")
        await asyncio.sleep(0.05)


async def _sora_stream(node: Node) -> tuple[GatewayConnection, GatewayStream]:
    conn = await GatewayConnection.connect(f"http://127.0.0.1:{node.sora_port}")
    stream = await conn.open_stream("/speech", request_headers(SORA_REQUEST))
    return conn, stream


async def _sora_results(stream: GatewayStream, packets: list[bytes]) -> int:
    """Send `packets`, and count the results that come back for them."""
    for packet in packets:
        await stream.send(packet)
    got = 0
    async with asyncio.timeout(10):
        while got < len(packets):
            result = await stream.results.get()
            assert result is not None and result["type"] == "test"
            got += 1
    return got


def _media(node: Node, call_id: str, seconds: float, dtmf_every_ms: int = 0) -> MediaStream:
    tones = [(at, "5") for at in range(200, int(seconds * 1000), dtmf_every_ms)] if dtmf_every_ms else []
    options = MediaOptions(
        node.base.replace("http", "ws") + "/acs/media", 16000, call_connection_id=call_id, enable_dtmf=bool(tones),
        dtmf=tones,
    )  # fmt: skip
    return MediaStream(options, CallAudio([Participant(phone_raw_id(1), _tone(seconds))], 16000))


@pytest.fixture
async def emulator(tmp_path: Path) -> AsyncIterator[CallAutomationEmulator]:
    emu = CallAutomationEmulator()
    await emu.start(tls_dir=tmp_path / "tls")
    yield emu
    await emu.stop()


async def test_an_acs_call_on_a_and_a_sora_connection_on_b_show_on_b_and_a_stop_sent_to_b_ends_as_stream(
    redis: RedisServer, emulator: CallAutomationEmulator, tmp_path: Path
) -> None:
    assert emulator.ca_file is not None
    jwt = {"enabled": True, "jwks_url": emulator.endpoint + "calling/keys", "audience": emulator.resource_id}
    acs = {"connection_string": emulator.connection_string, "ca_file": str(emulator.ca_file), "jwt": jwt}
    acs["jwt"]["ca_file"] = str(emulator.ca_file)
    async with two_nodes(redis, tmp_path, acs) as (a, b):
        script = CallScript([Speaker(phone_raw_id(1), _tone(30.0), 16000)], speed=1.0, hang_up_when_done=False)
        call = await emulator.ring(a.base + "/acs/events", script)  # A answers, and gets the media
        await call.wait_for("MediaStreamingStarted")
        call_id = call.call_connection_id
        conn, sora = await _sora_stream(b)
        assert await _sora_results(sora, fixture_packets()[:5]) == 5

        listed = await _poll(b, lambda calls: {call_id, SORA_CALL} <= calls.keys(), Node.calls)
        assert (listed[call_id]["node"], listed[call_id]["state"], listed[call_id]["door"]) == ("a", "streaming", "acs")
        assert (listed[SORA_CALL]["node"], listed[SORA_CALL]["state"], listed[SORA_CALL]["door"]) == (
            "b", "streaming", "sora",
        )  # fmt: skip
        assert listed[call_id]["info"]["managed"] is True  # what A's Call Automation knows shows on B
        assert (await a.calls()).keys() >= {call_id, SORA_CALL}

        # B's event stream of A's call: the replay, from A, through Redis
        async with b.http.stream("GET", f"/v1/calls/{call_id}/events") as events:
            kinds = await _sse_types(events, until_type="call.state")
        assert kinds[0] == "call.started" and "acs.callback" in kinds

        stopped = await b.http.post(f"/v1/calls/{call_id}/media/stop", json={"operationContext": "stop-from-b"})
        assert stopped.status_code == 202, stopped.text
        assert stopped.json()["operation_context"] == "stop-from-b"
        await until(lambda: call.streaming == "stopped")
        assert call.stream_task is not None
        await call.stream_task  # A's media stream ended, 30 s early
        assert call.media_reports[0].media_ms < 25_000
        snapshot = await _poll(b, lambda c: c["info"].get("media_streaming") == "stopped", lambda n: n.call(call_id))
        assert snapshot["info"]["last_operation_context"] == "stop-from-b"  # recorded by A, where it ran
        missing = await b.http.post("/v1/calls/no-such-call/media/stop")
        assert missing.status_code == 404
        assert await _sora_results(sora, fixture_packets()[5:8]) == 3  # B's session went on throughout
        await sora.end()
        await conn.close()
    assert emulator.errors == []


async def test_killing_a_ends_its_call_on_b_within_the_ttl_and_bs_sessions_go_on(
    redis: RedisServer, tmp_path: Path
) -> None:
    async with two_nodes(redis, tmp_path) as (a, b):
        media = _media(a, "call-on-a", seconds=60)
        streaming = asyncio.create_task(media.run())
        conn, sora = await _sora_stream(b)
        await _sora_results(sora, fixture_packets()[:3])
        await _poll(b, lambda c: c.get("call-on-a", {}).get("state") == "streaming", Node.calls)
        await _poll(a, lambda c: c.get(SORA_CALL, {}).get("state") == "streaming", Node.calls)

        a.child.process.kill()  # no Bye: B finds out from the lapsed heartbeat
        killed = time.monotonic()
        ended = await _poll(b, lambda c: c["state"] == "ended", lambda n: n.call("call-on-a"), timeout_s=2 * TTL_S)
        elapsed = time.monotonic() - killed
        assert elapsed < TTL_S, f"A's call was still live on B {elapsed:.2f} s after A was killed"
        assert ended["info"]["node_lost"] == "a"
        assert (await b.call(SORA_CALL))["state"] == "streaming"
        assert await _sora_results(sora, fixture_packets()[3:10]) == 7
        assert (await b.cluster())["lost_nodes"] == ["a"]
        with contextlib.suppress(Exception):
            await streaming  # its server is gone
        await sora.end()
        await conn.close()


async def test_a_redis_restart_mid_call_loses_no_live_session(redis: RedisServer, tmp_path: Path) -> None:
    async with two_nodes(redis, tmp_path) as (a, b):
        media = _media(a, "call-on-a", seconds=8, dtmf_every_ms=250)
        streaming = asyncio.create_task(media.run())
        conn, sora = await _sora_stream(b)
        await _sora_results(sora, fixture_packets()[:3])
        await _poll(b, lambda c: c.get("call-on-a", {}).get("state") == "streaming", Node.calls)
        await _poll(a, lambda c: c.get(SORA_CALL, {}).get("state") == "streaming", Node.calls)

        redis.kill()
        for node in (a, b):
            await _poll(node, lambda status: status["redis"] == "down", Node.cluster)
        assert await _sora_results(sora, fixture_packets()[3:6]) == 3  # sessions do not need Redis
        await asyncio.sleep(1.0)
        redis.start()  # empty: every node resends what it holds
        for node in (a, b):
            await _poll(node, lambda status: status["redis"] == "up", Node.cluster)

        # Events published after the restart reach the other node: DTMF on A's call, streamed from B.
        async with b.http.stream("GET", "/v1/calls/call-on-a/events") as events:
            tones_after = await _sse_types(events, until_type="dtmf", count=3, skip_replay=True)
        assert tones_after.count("dtmf") == 3
        assert (await b.call("call-on-a"))["state"] == "streaming"
        assert (await a.call(SORA_CALL))["state"] == "streaming"
        assert (await b.cluster())["lost_nodes"] == [] and (await a.cluster())["lost_nodes"] == []
        report = await streaming
        assert report.closed_by != "server" and report.violations == []  # the media ran its whole length
        assert report.media_ms >= 7_900
        assert await _sora_results(sora, fixture_packets()[6:9]) == 3
        await sora.end()
        await conn.close()


async def _sse_types(
    response: httpx.Response, *, until_type: str, count: int = 1, skip_replay: bool = False
) -> list[str]:
    """The event types of an SSE stream until `count` events of `until_type` (after the replay, if skipped)."""
    kinds: list[str] = []
    opened = time.time()
    async with asyncio.timeout(15):
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            event = orjson.loads(line.removeprefix("data: "))
            if skip_replay and event["time"] < opened:
                continue
            kinds.append(event["type"])
            if kinds.count(until_type) >= count:
                return kinds
    return kinds
