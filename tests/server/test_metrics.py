"""`GET /metrics` on the main port, and the structured logs, from real sessions on a live koe server: a spoken
Realtime turn (session counted while open, the turn and its latency breakdown recorded, a JSON log line carrying
the session id), a Sora stream through the running gateway (its own counters merged in, its exporter still
serving), the REST API's figures and the pools. Every scrape must parse as Prometheus text."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect as ws_connect

from koe.engines.registry import Engines
from koe.log import JsonFormatter
from koe.protocols.sora import SoraRequest
from koe.sim.sora.source import opus_packets
from tests.conftest import AUDIO
from tests.server.acs.support import koe_server
from tests.server.openai.support import API_KEY, api_settings
from tests.server.realtime.support import FRAME_BYTES, speech_24k
from tests.server.sora.support import connect, post, running_gateway

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
AUTH = {"Authorization": f"Bearer {API_KEY}"}
SETTLE_POLLS = 100
"""Scrapes to wait for a closing session to be counted out (each after a short sleep)."""


async def scrape(base: str) -> Samples:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{base}/metrics", headers=AUTH)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in samples, f"{sample.name} {sample.labels} appears twice"
            samples[key] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture(scope="module")
async def base_url(engines: Engines) -> AsyncIterator[str]:
    async with koe_server(api_settings(), engines) as (base, _app):
        yield base


@contextmanager
def json_log(logger: str) -> Iterator[io.StringIO]:
    """Capture `logger` at INFO through koe's JSON formatter, as `koe serve` writes it."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    target = logging.getLogger(logger)
    level = target.level
    target.addHandler(handler)
    target.setLevel(logging.INFO)
    try:
        yield out
    finally:
        target.removeHandler(handler)
        target.setLevel(level)


async def _settle(base: str, name: str, expected: float, **labels: str) -> Samples:
    for _ in range(SETTLE_POLLS):
        samples = await scrape(base)
        if value(samples, name, **labels) == expected:
            return samples
        await asyncio.sleep(0.05)
    return samples


async def test_a_realtime_turn_is_counted_timed_and_logged_with_its_session_id(base_url: str) -> None:
    before = await scrape(base_url)
    active = value(before, "koe_sessions_active", door="realtime")
    audio = speech_24k("short_16k.wav", tail_s=1.2)
    with json_log("koe.realtime") as log:
        async with ws_connect(f"ws{base_url[4:]}/v1/realtime?model=gpt-realtime", additional_headers=AUTH) as ws:
            created = json.loads(await ws.recv())
            assert created["type"] == "session.created"
            for start in range(0, len(audio), FRAME_BYTES):
                chunk = base64.b64encode(audio[start : start + FRAME_BYTES]).decode()
                await ws.send(orjson.dumps({"type": "input_audio_buffer.append", "audio": chunk}).decode())
            # The reply's timing is recorded as its first audio leaves; the rest of it need not be waited for.
            while (event := json.loads(await ws.recv()))["type"] != "response.output_audio.delta":
                assert event["type"] != "error", event
            during = await scrape(base_url)
        after = await _settle(base_url, "koe_sessions_active", active, door="realtime")

    assert value(during, "koe_sessions_active", door="realtime") == active + 1
    assert value(after, "koe_sessions_active", door="realtime") == active
    assert (
        value(after, "koe_sessions_total", door="realtime") == value(before, "koe_sessions_total", door="realtime") + 1
    )
    assert value(during, "koe_turns_total", door="realtime") >= value(before, "koe_turns_total", door="realtime") + 1
    for histogram in (
        "koe_response_latency_seconds",
        "koe_stt_seconds",
        "koe_llm_first_token_seconds",
        "koe_tts_first_audio_seconds",
    ):
        count = f"{histogram}_count"
        assert value(during, count, door="realtime") == value(before, count, door="realtime") + 1, histogram
        assert value(during, f"{histogram}_sum", door="realtime") > value(before, f"{histogram}_sum", door="realtime")

    session_id = created["session"]["id"]
    lines = [json.loads(line) for line in log.getvalue().splitlines()]
    started = [line for line in lines if line["msg"].startswith("realtime session started")]
    assert started and started[0]["session_id"] == session_id
    assert started[0]["door"] == "realtime" and started[0]["level"] == "info"


async def test_the_sora_doors_counters_are_merged_not_copied(engines: Engines) -> None:
    english = SoraRequest("sora", "METRICS", "C1", "en-US")
    packets = opus_packets(AUDIO / "short_16k.wav")
    async with koe_server(api_settings(), engines) as (base, app):
        before = await scrape(base)
        async with running_gateway(engines, service="koe", exporter_port=0) as gateway:
            app.state.sora = gateway  # what `koe serve` does once the gateway listens
            conn = await connect(gateway)
            garbage = await post(conn, "/speech", [packets[0], b"\x0b\xff" + bytes(300)], english)
            speech = await post(conn, "/speech", packets, english)
            await garbage.closed(10)
            await speech.closed(30)
            await conn.close()
            main = await _settle(
                base, "koe_sessions_active", value(before, "koe_sessions_active", door="sora"), door="sora"
            )
            async with httpx.AsyncClient() as http:
                exporter = await http.get(f"http://127.0.0.1:{gateway.exporter_port}/metrics")
    assert any(result.get("is_final") for result in speech.text_results())
    assert value(main, "koe_sessions_total", door="sora") == value(before, "koe_sessions_total", door="sora") + 2
    assert value(main, "koe_turns_total", door="sora") >= value(before, "koe_turns_total", door="sora") + 1
    assert value(main, "koe_sora_requests_total", path="/speech", status="200") == 2
    assert value(main, "koe_sora_malformed_packets_total") == 1
    assert value(main, "koe_dropped_frames_total", door="sora", reason="malformed") == 1
    # The exporter port serves the same counters, from the same object.
    assert exporter.status_code == 200
    exported = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(exporter.text)
        for s in family.samples
    }
    assert exported[("koe_sora_malformed_packets_total", frozenset())] == 1


async def test_rest_requests_pools_and_dropped_acs_frames_are_reported(base_url: str, engines: Engines) -> None:
    before = await scrape(base_url)
    async with ws_connect(f"ws{base_url[4:]}/acs/media?api-key={API_KEY}") as acs:
        await acs.send("this is not an ACS frame")
        await acs.send('{"kind": "AudioData"}')
    dropped = value(before, "koe_dropped_frames_total", door="acs", reason="malformed") + 2
    await _settle(base_url, "koe_dropped_frames_total", dropped, door="acs", reason="malformed")
    async with httpx.AsyncClient() as http:
        ok = await http.post(
            f"{base_url}/v1/audio/transcriptions",
            headers=AUTH,
            files={"file": ("a.wav", (AUDIO / "short_16k.wav").read_bytes(), "audio/wav")},
            data={"model": "whisper-1"},
        )
        refused = await http.get(f"{base_url}/v1/models", headers={"Authorization": "Bearer wrong"})
        unauthorized = await http.get(f"{base_url}/metrics", headers={"Authorization": "Bearer wrong"})
    assert ok.status_code == 200 and refused.status_code == 401 and unauthorized.status_code == 401
    after = await scrape(base_url)
    route = "/v1/audio/transcriptions"
    assert value(after, "koe_api_requests_total", route=route, status="200") == (
        value(before, "koe_api_requests_total", route=route, status="200") + 1
    )
    assert value(after, "koe_api_requests_total", route="/v1/models", status="401") >= 1
    assert value(after, "koe_dropped_frames_total", door="acs", reason="malformed") == dropped
    assert value(after, "koe_stt_seconds_count", door="api") == value(before, "koe_stt_seconds_count", door="api") + 1
    for pool in engines.pools():
        assert value(after, "koe_pool_workers", pool=pool.name) == pool.workers
        assert ("koe_pool_queue_depth", frozenset({("pool", pool.name)})) in after
    assert value(after, "koe_pool_jobs_completed_total", pool="stt") > value(
        before, "koe_pool_jobs_completed_total", pool="stt"
    )
    # The serving loop's tasks: at least the one answering this scrape.
    assert value(after, "koe_asyncio_tasks") >= 1
