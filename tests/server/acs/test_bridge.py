"""Bridge mode against koe's own Realtime door (GA and Voice Live dialects), as in the ACS + Realtime quickstart:
the call's audio goes to the Realtime endpoint, its spoken reply comes back as outbound AudioData at the stream's
rate, and the endpoint's speech_started becomes StopAudio. The endpoint's LLM is a stand-in with fixed words (what
the embedded model answers is its own, and no part of the bridge): a short answer whose audio must come back, and a
long story for the caller to interrupt. A remote that sends frames the Realtime client cannot read is a plain
websockets server speaking the GA event format: those frames are logged and counted, and the call goes on."""

from __future__ import annotations

import base64
import json
import logging
import time
from dataclasses import replace

import numpy as np
import pytest
from websockets.asyncio.server import ServerConnection, serve

from koe.audio.resample import resample
from koe.config import load_settings
from koe.engines.registry import Engines
from koe.net.inprocess import free_port
from koe.server.app import create_app
from koe.server.metrics import METRICS
from koe.sim.acs.media import MediaOptions, MediaStream
from koe.sim.acs.participants import CallAudio, Participant, acs_raw_id, phone_raw_id
from koe.voice.playback import OUTPUT_LEAD_MS
from tests.conftest import load_wav
from tests.engines.openai_standin import REPLY_WORDS, scripted_engines
from tests.server.acs.support import RecordingTTS, assert_sent_speech, record_outbound, serve_app
from tests.wer import wer

pytestmark = pytest.mark.timeout(120)


def _voice(name: str, rate: int) -> np.ndarray:
    if rate == 16000:
        return load_wav(f"{name}_16k.wav")[0]
    pcm, source = load_wav(f"{name}_48k.wav")
    return resample(pcm, source, rate)


BURST_S = 4
BURST_24K = np.full(24000 * BURST_S, 2000, dtype="<i2").tobytes()


async def _bursting_remote(ws: ServerConnection) -> None:
    """A remote that sends a whole reply at once, as OpenAI's Realtime API does: four seconds in one delta."""
    async for frame in ws:
        if json.loads(frame)["type"] == "input_audio_buffer.append":
            break
    delta = base64.b64encode(BURST_24K).decode()
    await ws.send(json.dumps({"type": "response.created", "response": {"id": "resp_1"}}))
    await ws.send(json.dumps({"type": "response.output_audio.delta", "response_id": "resp_1", "item_id": "item_1",
                              "output_index": 0, "content_index": 0, "delta": delta}))  # fmt: skip
    async for _ in ws:
        pass


async def test_a_reply_the_remote_sends_in_a_burst_reaches_the_call_paced() -> None:
    rate = 16000
    arrivals: list[tuple[float, int]] = []
    async with serve(_bursting_remote, "127.0.0.1", 0) as remote:
        port = next(iter(remote.sockets)).getsockname()[1]
        app = _app(Engines(), port, "/v1/realtime", "openai")
        async with serve_app(app) as base:
            audio = CallAudio([Participant(phone_raw_id(1), np.zeros(rate // 2, dtype=np.int16))], rate)
            options = MediaOptions(base.replace("http", "ws") + "/acs/media", rate, call_connection_id="bridge-burst",
                                   speed=1.0, reply_timeout_ms=5000, linger_ms=1000)  # fmt: skip
            stream = MediaStream(options, audio)
            enqueue = stream.playout.enqueue

            def keep(pcm: bytes, now_ms: float) -> None:
                arrivals.append((time.monotonic(), len(pcm)))
                enqueue(pcm, now_ms)

            stream.playout.enqueue = keep  # type: ignore[method-assign]
            await stream.run()
    assert arrivals
    first, received_ms = arrivals[0][0], 0.0
    for at, size in arrivals:
        received_ms += size / 2 / rate * 1000
        assert received_ms - (at - first) * 1000 <= OUTPUT_LEAD_MS + 60, (received_ms, (at - first) * 1000)
    assert received_ms == pytest.approx(BURST_S * 1000, rel=0.05)
    assert (arrivals[-1][0] - first) * 1000 >= 0.6 * (received_ms - OUTPUT_LEAD_MS)


def _app(engines: Engines, port: int, path: str, dialect: str) -> object:
    bridge = {"url": f"ws://127.0.0.1:{port}{path}", "dialect": dialect, "instructions": "Answer in one sentence."}
    settings = load_settings(overrides={"acs": {"mode": "bridge", "bridge": bridge}})
    return create_app(settings, engines)


@pytest.mark.models
@pytest.mark.parametrize(
    ("rate", "mixed", "path", "dialect"),
    [(16000, True, "/v1/realtime", "openai"), (24000, False, "/voice-live/realtime", "voicelive")],
)
async def test_bridge_relays_the_call_to_a_realtime_endpoint_and_back(
    engines: Engines, texts: dict[str, str], rate: int, mixed: bool, path: str, dialect: str
) -> None:
    quiet = np.zeros(rate // 2, dtype=np.int16)
    people = [
        Participant(phone_raw_id(1), _voice("short", rate)),
        Participant(acs_raw_id(), quiet),
        Participant(phone_raw_id(2), quiet),
    ]
    audio = CallAudio(people, rate, mixed=mixed, tail_ms=200)
    port = free_port()
    # The endpoint's LLM is a stand-in with a fixed answer: the bridge has to bring back that answer's audio, and
    # what the embedded model would have said is no part of the bridge.
    async with scripted_engines(engines, REPLY_WORDS) as scripted:
        tts = RecordingTTS(scripted.tts)
        app = _app(replace(scripted, tts=tts), port, path, dialect)
        async with serve_app(app, port) as base:
            url = base.replace("http", "ws") + "/acs/media"
            options = MediaOptions(url, rate, call_connection_id=f"bridge-{dialect}", speed=3.0,
                                   reply_timeout_ms=30000, linger_ms=3000)  # fmt: skip
            stream = MediaStream(options, audio)
            outbound = record_outbound(stream)
            report = await stream.run()
            call = app.state.calls.get(f"bridge-{dialect}")  # type: ignore[attr-defined]
    assert report.violations == []
    assert report.outbound_audio_bytes > 0
    assert call is not None
    kinds = [event["type"] for event in call.recent]
    assert "transcript.completed" in kinds, kinds
    heard = [e["text"] for e in call.recent if e["type"] == "transcript.completed"]
    assert wer(texts["short"], " ".join(heard)) <= 0.2, heard  # the caller, as the endpoint transcribed them
    assert "response.started" in kinds
    # The endpoint's spoken answer came back at the stream's rate: the very samples its TTS made, chunk by chunk
    # (from the start: the caller hangs up a few seconds after the audio pauses, and the bridge sends the reply at
    # the pace it is played, so its last piece may be cut). A loaded machine may hear the question as two turns,
    # each answered, in order.
    said = assert_sent_speech(bytes(outbound), tts.chunks, rate)
    assert all(text.strip() in "".join(REPLY_WORDS) for text in said), (said, REPLY_WORDS)


@pytest.mark.models
async def test_bridge_barge_in_becomes_stop_audio(engines: Engines) -> None:
    rate = 16000
    audio = CallAudio([Participant(phone_raw_id(1), _voice("short", rate))], rate, tail_ms=200)
    port = free_port()
    async with scripted_engines(engines) as scripted:  # a story, still playing when the caller interrupts
        app = _app(scripted, port, "/v1/realtime", "openai")
        async with serve_app(app, port) as base:
            options = MediaOptions(
                base.replace("http", "ws") + "/acs/media",
                rate,
                call_connection_id="bridge-barge",
                speed=1.0,
                reply_timeout_ms=20000,
                linger_ms=500,
                barge_in=(phone_raw_id(1), _voice("utterance", rate)[: rate * 3 // 2]),
                barge_in_after_ms=600,
            )
            report = await MediaStream(options, audio).run()
            call = app.state.calls.get("bridge-barge")  # type: ignore[attr-defined]
    assert report.stop_audio >= 1
    assert report.barge_ins, report.as_dict()
    assert report.barge_ins[0].dropped_ms > 0
    assert any(e["type"] == "barge_in" for e in call.recent)


REPLY_24K = np.full(24000 // 5, 2000, dtype="<i2").tobytes()  # 200 ms of reply audio at the Realtime rate
UNREADABLE = [
    "{not json",
    '{"type":"response.output_audio.delta","response_id":"resp_1","item_id":"item_1","delta":"%%%"}',
    '{"type":"input_audio_buffer.speech_started","audio_start_ms":"soon"}',
]


async def _unreadable_remote(ws: ServerConnection) -> None:
    """A Realtime endpoint gone wrong: after the session update and the first audio, three frames no client can
    read, then a reply that must still reach the caller."""
    first = json.loads(await ws.recv())
    assert first["type"] == "session.update"
    async for frame in ws:
        if json.loads(frame)["type"] == "input_audio_buffer.append":
            break
    for frame in UNREADABLE:
        await ws.send(frame)
    delta = base64.b64encode(REPLY_24K).decode()
    await ws.send(json.dumps({"type": "response.created", "response": {"id": "resp_1"}}))
    await ws.send(json.dumps({"type": "response.output_audio.delta", "response_id": "resp_1", "item_id": "item_1",
                              "output_index": 0, "content_index": 0, "delta": delta}))  # fmt: skip
    async for _ in ws:
        pass


async def test_an_unreadable_frame_from_the_remote_is_logged_and_counted_and_the_call_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rate = 16000
    before = METRICS.dropped[("acs", "bridge_unreadable")]
    async with serve(_unreadable_remote, "127.0.0.1", 0) as remote:
        port = next(iter(remote.sockets)).getsockname()[1]
        app = _app(Engines(), port, "/v1/realtime", "openai")
        async with serve_app(app) as base:
            audio = CallAudio([Participant(phone_raw_id(1), np.zeros(rate // 2, dtype=np.int16))], rate)
            options = MediaOptions(base.replace("http", "ws") + "/acs/media", rate, call_connection_id="bridge-bad",
                                   speed=4.0, reply_timeout_ms=5000, linger_ms=300)  # fmt: skip
            with caplog.at_level(logging.WARNING, logger="koe.server.acs.door"):
                report = await MediaStream(options, audio).run()
            call = app.state.calls.get("bridge-bad")  # type: ignore[attr-defined]
    assert METRICS.dropped[("acs", "bridge_unreadable")] - before == len(UNREADABLE)
    unreadable = [r.getMessage() for r in caplog.records if "unreadable frame from the bridge" in r.getMessage()]
    assert len(unreadable) == len(UNREADABLE), unreadable
    assert "not JSON" in unreadable[0] and "invalid base64" in unreadable[1] and "not a number" in unreadable[2]
    # the call went on: the reply after the bad frames reached the caller, resampled to the stream's rate (less the
    # few ms the streaming resampler still holds)
    assert report.violations == []
    assert report.outbound_audio_bytes == pytest.approx(len(REPLY_24K) * 2 // 3, rel=0.1)
    assert call is not None
    assert "response.started" in [event["type"] for event in call.recent]
