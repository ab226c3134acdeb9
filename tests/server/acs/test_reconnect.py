"""ACS drops the media WebSocket mid-call and reconnects (issue 14, must-hold 2): the emulator resets the connection
(no close frame) and opens it again with the same call headers and a fresh `AudioMetadata`. The call goes on as one
call, and its transcripts are neither lost nor duplicated: the turn still open when the connection dropped is
finished from the audio already received, the next one is heard on the new connection.

In between, the call waits for its stream (`acs.reconnect_grace_s`, state "reconnecting"): its subscribers stay
subscribed and no `call.ended` comes; a lost stream that never comes back ends the call after the grace, a close
frame ends it at once. Those are checked model-less, in echo mode, on the main port and on the picows listener."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection, connect

from koe.engines.registry import Engines
from koe.protocols.acs import AudioData, AudioMetadata, encode, iso_timestamp
from koe.sim.acs.media import MediaOptions, MediaStream
from koe.sim.acs.participants import CallAudio, Participant, phone_raw_id
from tests.conftest import load_wav
from tests.server.acs.support import acs_settings, koe_server, koe_with_listener
from tests.wer import wer

pytestmark = pytest.mark.timeout(120)

RATE = 16000
MAX_WER = 0.2


@pytest.mark.models
async def test_a_dropped_media_connection_reconnects_and_every_turn_is_transcribed_once(
    engines: Engines, texts: dict[str, str]
) -> None:
    first, second = load_wav("short_16k.wav")[0], load_wav("utterance_16k.wav")[0]
    pause = np.zeros(RATE * 2, dtype=np.int16)
    speech = np.concatenate([first, pause, second])
    drop_ms = len(first) * 1000 // RATE + 200  # just after the first question, before its turn has ended
    audio = CallAudio([Participant(phone_raw_id(1), speech)], RATE, tail_ms=1500)
    async with koe_server(acs_settings(mode="transcribe", partial_results=False), engines) as (base, app):
        options = MediaOptions(
            base.replace("http", "ws") + "/acs/media",
            RATE,
            call_connection_id="reconnecting",
            speed=2.0,
            drop_at_ms=[drop_ms],
        )
        report = await MediaStream(options, audio).run()
        call = app.state.calls.get("reconnecting")
        assert call is not None
        for _ in range(200):  # the last turn's transcript may still be on its way
            if sum(e["type"] == "transcript.completed" for e in call.recent) >= 2:
                break
            await asyncio.sleep(0.1)
    assert report.reconnects == 1
    assert report.violations == []
    finals = [event["text"] for event in call.recent if event["type"] == "transcript.completed"]
    assert len(finals) == 2, finals  # neither lost nor duplicated
    assert wer(texts["short"], finals[0]) <= MAX_WER
    assert wer(texts["utterance"], finals[1]) <= MAX_WER
    kinds = [event["type"] for event in call.recent]
    assert kinds.count("call.started") == 1  # one call throughout: the reconnection continues it
    # The reconnect grace (acs.reconnect_grace_s): the call waited for its stream, and never showed ended before it.
    assert "state:reconnecting" in [_kind(event) for event in call.recent]
    assert "call.ended" not in kinds[: len(kinds) - 1], kinds


# --- the grace period, on both ports (model-less: echo mode) ----------------------------------------------------

WAIT_S = 30.0
"""Generous bound on anything awaited here: the machine may be busy."""


async def _until(condition: Callable[[], bool]) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def _frame(offset_s: float) -> str:
    return encode(AudioData(bytes(640), iso_timestamp(1_700_000_000.0 + offset_s)))


async def _stream(url: str, call_id: str, frames: int = 3) -> ClientConnection:
    """A media connection that has started its call and sent `frames` of audio (echoed back, so koe has them)."""
    ws = await connect(url, additional_headers={"x-ms-call-connection-id": call_id})
    await ws.send(encode(AudioMetadata("sub", RATE)))
    for number in range(frames):
        await ws.send(_frame(number * 0.02))
        await asyncio.wait_for(ws.recv(), WAIT_S)
    return ws


def _lose(ws: ClientConnection) -> None:
    """Reset the connection: no close frame, as a network drop or ACS's reconnect fault leaves it."""
    ws.transport.abort()


@contextlib.asynccontextmanager
async def _koe(grace_s: float, port: str) -> AsyncIterator[tuple[str, Any]]:
    """koe in echo mode with `grace_s`, and the media URL of the main port or of the picows listener."""
    settings = acs_settings(mode="echo", reconnect_grace_s=grace_s)
    async with koe_with_listener(settings) as koe:
        yield (koe.main if port == "main" else koe.media) + "/acs/media", koe.app


PORTS = pytest.mark.parametrize("port", ["main", "picows"])


def _kinds(call: Any) -> list[str]:
    return [_kind(event) for event in call.recent]


def _kind(event: dict[str, Any]) -> str:
    return f"state:{event['state']}" if event["type"] == "call.state" else str(event["type"])


@PORTS
async def test_a_lost_media_connection_keeps_its_call_until_acs_reconnects(port: str) -> None:
    async with _koe(30.0, port) as (url, app):
        calls = app.state.calls
        ws = await _stream(url, "grace-1")
        followed: list[str] = []  # what a subscriber (an SSE client, the call monitor) sees from here on

        async def follow() -> None:
            async for event in calls.subscribe("grace-1", replay=False):
                followed.append(_kind(event))

        follower = asyncio.create_task(follow())
        _lose(ws)
        await _until(lambda: calls.get("grace-1").state == "reconnecting")
        await asyncio.sleep(0.3)
        assert calls.get("grace-1").ended_at is None  # still open: ACS reconnects a live call's stream
        async with await _stream(url, "grace-1"):
            await _until(lambda: calls.get("grace-1").state == "streaming")
        await asyncio.wait_for(follower, WAIT_S)  # the subscription ends with the call, not with the lost stream
        call = calls.get("grace-1")
        assert app.state.acs.counters["reconnections"] == 1
    assert followed == ["state:reconnecting", "state:streaming", "state:stopped", "call.ended"], followed
    kinds = [_kind(event) for event in call.recent]
    assert kinds.count("call.started") == 1 and kinds.count("call.ended") == 1, kinds
    assert call.recent[-1]["reason"] == "media stream closed"  # a close frame ends the call at once


@PORTS
async def test_a_lost_media_connection_that_never_comes_back_ends_its_call_after_the_grace(port: str) -> None:
    async with _koe(0.5, port) as (url, app):
        calls = app.state.calls
        _lose(await _stream(url, "grace-2"))
        await _until(lambda: calls.get("grace-2").state == "reconnecting")
        lost_at = time.monotonic()
        await _until(lambda: calls.get("grace-2").state == "ended")
        waited = time.monotonic() - lost_at
        call = calls.get("grace-2")
    assert call.recent[-1]["type"] == "call.ended" and call.recent[-1]["reason"] == "media stream lost"
    assert waited >= 0.3, waited  # it waited (about) the grace first; how long past it is the machine's


async def test_a_closed_media_connection_ends_its_call_at_once_and_a_grace_of_0_ends_a_lost_one_at_once() -> None:
    async with _koe(30.0, "main") as (url, app):
        calls = app.state.calls
        await (await _stream(url, "closed")).close()
        await _until(lambda: calls.get("closed").state == "ended")
    assert "state:reconnecting" not in _kinds(calls.get("closed"))
    async with _koe(0.0, "main") as (url, app):
        calls = app.state.calls
        _lose(await _stream(url, "no-grace"))
        await _until(lambda: calls.get("no-grace").state == "ended")
    assert "state:reconnecting" not in _kinds(calls.get("no-grace"))
    assert calls.get("no-grace").recent[-1]["reason"] == "media stream closed"


async def test_a_call_waiting_for_its_media_ends_when_koe_stops() -> None:
    async with _koe(300.0, "main") as (url, app):
        calls = app.state.calls
        _lose(await _stream(url, "stopping"))
        await _until(lambda: calls.get("stopping").state == "reconnecting")
        app.state.acs.close()  # what the app's lifespan does as the server stops
        call = calls.get("stopping")
    assert call.state == "ended" and call.recent[-1]["reason"] == "media stream lost"
