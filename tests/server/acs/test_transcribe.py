"""Transcribe mode with the real models: the simulator calls koe with three participants, mixed and unmixed, at 16
and 24 kHz; transcripts per participant and turn arrive over the results WebSocket, SSE and a webhook."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from websockets.asyncio.client import connect

from koe.audio.resample import resample
from koe.engines.registry import Engines
from koe.sim.acs.media import MediaOptions, MediaStream
from koe.sim.acs.participants import CallAudio, Participant, acs_raw_id, phone_raw_id
from tests.conftest import load_wav
from tests.server.acs.support import acs_settings, koe_server, serve_app
from tests.wer import wer

pytestmark = [pytest.mark.models, pytest.mark.timeout(120)]

NAMES = ("utterance", "short", "reply")


def _voice(name: str, rate: int) -> np.ndarray:
    if rate == 16000:
        return load_wav(f"{name}_16k.wav")[0]
    pcm, source = load_wav(f"{name}_48k.wav")
    return resample(pcm, source, rate)


def _call(rate: int, mixed: bool) -> tuple[CallAudio, list[str]]:
    ids = [phone_raw_id(1), acs_raw_id(), phone_raw_id(2)]
    # Mixed: one after another, so the mix stays intelligible. Unmixed: overlapping, each on its own channel.
    starts = [0, 6000, 9500] if mixed else [0, 1000, 2000]
    people = [Participant(i, _voice(n, rate), s) for i, n, s in zip(ids, NAMES, starts, strict=True)]
    return CallAudio(people, rate, mixed=mixed, tail_ms=300), ids


async def _collect(url: str, into: list[dict[str, Any]]) -> None:
    async with connect(url) as ws:
        async for frame in ws:
            into.append(json.loads(frame))


@pytest.mark.parametrize("rate", [16000, 24000])
@pytest.mark.parametrize("mixed", [True, False])
async def test_transcripts_per_participant_and_turn(
    engines: Engines, texts: dict[str, str], rate: int, mixed: bool
) -> None:
    audio, ids = _call(rate, mixed)
    call_id = f"cc-{rate}-{'mixed' if mixed else 'unmixed'}"
    async with koe_server(acs_settings(mode="transcribe"), engines) as (base, _app):
        ws_base = base.replace("http", "ws")
        options = MediaOptions(f"{ws_base}/acs/media", rate, call_connection_id=call_id, speed=4.0, bidirectional=False)
        stream = MediaStream(options, audio)
        call = asyncio.create_task(stream.run())
        await stream.started.wait()
        received: list[dict[str, Any]] = []
        await asyncio.sleep(0.05)
        await asyncio.wait_for(_collect(f"{ws_base}/v1/calls/{call_id}/events", received), 90)
        report = await call
    assert report.violations == []
    finals = [e for e in received if e["type"] == "transcript.completed"]
    assert received[-1]["type"] == "call.ended"
    if mixed:
        assert all(e["participant"] is None for e in finals)
        spoken = " ".join(e["text"] for e in finals)
        assert wer(" ".join(texts[n] for n in NAMES), spoken) <= 0.2, spoken
    else:
        for raw_id, name in zip(ids, NAMES, strict=True):
            said = " ".join(e["text"] for e in finals if e["participant"] == raw_id)
            assert wer(texts[name], said) <= 0.2, (name, said)
        partials = {e["participant"] for e in received if e["type"] == "transcript.delta"}
        assert partials <= set(ids)
        assert partials, "partial results were requested"
    for event in finals:
        assert event["audio_end_ms"] > event["audio_start_ms"]


@pytest.fixture
async def webhook() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    got: list[dict[str, Any]] = []

    async def receive(request: Request) -> Response:
        got.append(await request.json())
        return Response(status_code=204)

    async with serve_app(Starlette(routes=[Route("/hook", receive, methods=["POST"])])) as base:
        yield base + "/hook", got


async def test_sse_subscribers_and_the_webhook_get_the_results(
    engines: Engines, texts: dict[str, str], webhook: tuple[str, list[dict[str, Any]]]
) -> None:
    hook_url, hooked = webhook
    pcm, rate = load_wav("short_16k.wav")
    audio = CallAudio([Participant(phone_raw_id(1), pcm)], rate, tail_ms=200)
    settings = acs_settings(mode="transcribe", webhook_url=hook_url)
    async with koe_server(settings, engines) as (base, _app), httpx.AsyncClient(base_url=base, timeout=60) as http:
        options = MediaOptions(base.replace("http", "ws") + "/acs/media", rate, call_connection_id="cc-sse", speed=4.0)
        stream = MediaStream(options, audio)
        call = asyncio.create_task(stream.run())
        await stream.started.wait()
        lines: list[str] = []
        async with http.stream("GET", "/v1/calls/cc-sse/events") as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            async for line in response.aiter_lines():
                lines.append(line)
        await call
        snapshot = (await http.get("/v1/calls/cc-sse")).json()
        for _ in range(100):
            if hooked:
                break
            await asyncio.sleep(0.05)
    events = [json.loads(line[6:]) for line in lines if line.startswith("data: ")]
    assert [line for line in lines if line.startswith("event: ")][-1] == "event: call.ended"
    final = [e for e in events if e["type"] == "transcript.completed"]
    assert len(final) == 1
    assert wer(texts["short"], final[0]["text"]) <= 0.2
    assert snapshot["transcript"][0]["text"] == final[0]["text"]
    assert snapshot["state"] == "ended"
    assert [h["type"] for h in hooked] == ["transcript.completed"]
    assert hooked[0]["text"] == final[0]["text"]
