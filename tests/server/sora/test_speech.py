"""The `koe` service on bad input: an undecodable packet ends that stream with an error object; the others go on."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from koe.config import Settings
from koe.engines.registry import Engines, load_engines
from koe.protocols.sora import SoraRequest
from koe.server.calls.registry import CallRegistry
from koe.server.sora.services.koe import KoeService
from koe.sim.sora.source import opus_packets
from tests.conftest import AUDIO, load_wav
from tests.server.sora.support import connect, fixture_packets, framed, post, running_gateway
from tests.wer import wer

ENGLISH = SoraRequest("sora", "S", "C", "en-US")


@pytest.fixture(scope="module")
def speech_engines() -> Engines:
    return load_engines(Settings(), ["vad", "stt"])


@pytest.mark.models
@pytest.mark.parametrize("framing", ["header", "raw"])
async def test_bad_packets_end_only_their_stream(speech_engines: Engines, texts: dict[str, str], framing: str) -> None:
    speech = opus_packets(AUDIO / "short_16k.wav")
    bad_code3 = fixture_packets("bad_code3.jsonl")[0]
    garbage = b"\x0b\xff" + bytes(300)  # code 3 claiming 63 frames of 60 ms: libopus refuses it
    header = framing == "header"
    calls = CallRegistry()
    async with running_gateway(speech_engines, calls, service="koe", audio_streaming_header=header) as gateway:
        conn = await connect(gateway)
        headers = framed if header else list
        good = await post(conn, "/speech", [], ENGLISH, end=False)
        victims = [
            await post(conn, "/speech", headers([speech[0], bad]), ENGLISH, end=False) for bad in (bad_code3, garbage)
        ]
        for victim in victims:
            await victim.closed(10)
        for frame in headers(speech):
            await good.send(frame)
        await good.end()
        await good.closed(30)
        await conn.close()
    for victim in victims:
        (error,) = victim.text_results()
        assert error["type"] == "error"
        assert error["reason"].startswith("OPUS-DECODE-ERROR: ")
    finals = [r for r in good.text_results() if r.get("is_final")]
    assert wer(texts["short"], " ".join(r["message"] for r in finals)) <= 0.2
    assert gateway.metrics.malformed_packets == 2
    # The call monitor saw one call for the Sora session, with its transcript, ended once every stream ended.
    (call,) = calls.calls()
    assert call.id == "sora:sora:S"
    assert call.door == "sora"
    assert call.state == "ended"
    kinds = [e["type"] for e in call.recent]
    assert kinds[:2] == ["call.started", "participant.joined"]
    assert kinds[-1] == "call.ended"
    completed = [e for e in call.recent if e["type"] == "transcript.completed"]
    assert [e["text"] for e in completed] == [r["message"] for r in finals]
    assert all(e["participant"] == "C" for e in completed)


@pytest.mark.models
async def test_partials_pause_while_transcriptions_queue_up(speech_engines: Engines) -> None:
    stt = speech_engines.require("stt")
    long_audio = np.tile(load_wav("utterance_16k.wav")[0], 3)
    async with running_gateway(speech_engines, service="koe", audio_streaming_header=True) as gateway:
        conn = await connect(gateway)
        stream = await post(conn, "/speech", [], ENGLISH, end=False)
        service = gateway.speech_service
        assert isinstance(service, KoeService)
        for _ in range(100):
            if service.streams:
                break
            await asyncio.sleep(0.01)
        (speech,) = service.streams
        assert speech._session.config.partial_results
        # Real transcriptions fill the STT pool: four jobs, one running and three waiting.
        jobs = [asyncio.ensure_future(stt.transcribe(long_audio)) for _ in range(4)]
        for _ in range(100):
            if gateway.metrics.partials_paused:
                break
            await asyncio.sleep(0.02)
        assert gateway.metrics.partials_paused == 1
        assert not speech._session.config.partial_results
        await asyncio.gather(*jobs)
        for _ in range(200):
            if not gateway.metrics.partials_paused:
                break
            await asyncio.sleep(0.02)
        assert gateway.metrics.partials_paused == 0
        assert speech._session.config.partial_results
        await stream.end()
        await stream.closed(10)
        await conn.close()
