"""koe.sim.acs.media against a plain websockets server that plays the part of a bot: the handshake, the frames it
receives, outbound audio in every official casing, StopAudio flushes and violations."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.server import ServerConnection, serve

from koe.sim.acs.media import MediaConnectError, MediaOptions, MediaStream
from koe.sim.acs.participants import CallAudio, Participant, phone_raw_id

RATE = 16000
REPLY = np.full(RATE, 3000, dtype="<i2").tobytes()  # 1 s of outbound audio


class Bot:
    def __init__(self) -> None:
        self.headers: dict[str, str] = {}
        self.received: list[dict[str, Any]] = []
        self.path = ""

    async def handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        self.path = ws.request.path
        self.headers = {k.lower(): v for k, v in ws.request.headers.raw_items()}
        sent_reply = False
        async for frame in ws:
            message = json.loads(frame)
            self.received.append(message)
            if message["kind"] == "AudioData" and not sent_reply:
                sent_reply = True
                data = base64.b64encode(REPLY).decode()
                # JS SDK shape: lowercase kind and a stopAudio object that must not stop anything
                await ws.send(json.dumps({"kind": "audioData", "audioData": {"data": data}, "stopAudio": {}}))
                await ws.send('{"Kind":"Transcription","Text":"hi"}')
                await ws.send(b"\x00\x01")
                await ws.send('{"Kind":"AudioData","AudioData":{"Data":"AA=="}}')
            if len(self.received) == 20:
                await ws.send('{"kind":"stopAudio","stopAudio":{}}')


@pytest.fixture
async def bot() -> AsyncIterator[tuple[Bot, int]]:
    the_bot = Bot()
    async with serve(the_bot.handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield the_bot, port


def _speech(ms: int) -> np.ndarray:
    t = np.arange(RATE * ms // 1000) / RATE
    return (np.sin(2 * np.pi * 300 * t) * 6000).astype(np.int16)


async def test_streams_like_acs_and_plays_outbound_audio(bot: tuple[Bot, int]) -> None:
    the_bot, port = bot
    audio = CallAudio([Participant(phone_raw_id(1), _speech(600))], RATE, mixed=False)
    options = MediaOptions(
        f"wss://127.0.0.1:{port}/acs/media/call-7?secret=s",
        RATE,
        token="tok",
        speed=3.0,
        enable_dtmf=True,
        dtmf=[(100, "5")],
    )
    stream = MediaStream(options, audio)
    report = await stream.run()
    assert the_bot.path == "/acs/media/call-7?secret=s"
    assert the_bot.headers["x-ms-call-connection-id"] == options.call_connection_id
    assert the_bot.headers["x-ms-call-correlation-id"] == options.correlation_id
    assert the_bot.headers["authorization"] == "Bearer tok"
    kinds = [m["kind"] for m in the_bot.received]
    assert kinds[0] == "AudioMetadata"
    assert the_bot.received[0]["audioMetadata"]["sampleRate"] == RATE
    assert kinds.count("AudioData") == 30
    assert kinds.count("DtmfData") == 1
    assert all(
        m["audioData"]["participantRawID"] == phone_raw_id(1) for m in the_bot.received if m["kind"] == "AudioData"
    )
    assert report.largest_message_bytes < 2048
    assert report.outbound_audio_messages == 1
    assert report.stop_audio == 1
    assert report.unknown_kinds == {"Transcription": 1}
    assert any("binary frame" in v for v in report.violations)
    assert any("even number" in v for v in report.violations)
    assert report.playback["flushed_ms"] > 0
    assert report.playback["played_ms"] + report.playback["flushed_ms"] == pytest.approx(1000, abs=1)
    assert report.closed_by == "simulator"
    assert report.close_code == 1000


async def test_refused_connection_raises_media_connect_error() -> None:
    audio = CallAudio([Participant(phone_raw_id(1), _speech(100))], RATE)
    with pytest.raises(MediaConnectError):
        await MediaStream(MediaOptions("ws://127.0.0.1:9/ws", RATE, open_timeout_s=1), audio).run()


async def test_hang_up_ends_the_stream_early(bot: tuple[Bot, int]) -> None:
    _, port = bot
    audio = CallAudio([Participant(phone_raw_id(1), _speech(5000))], RATE)
    stream = MediaStream(MediaOptions(f"ws://127.0.0.1:{port}/ws", RATE, speed=1.0), audio)
    task = asyncio.create_task(stream.run())
    await stream.started.wait()
    await asyncio.sleep(0.1)
    stream.hang_up()
    report = await task
    assert report.frames_sent < 50
    assert report.close_code == 1000
