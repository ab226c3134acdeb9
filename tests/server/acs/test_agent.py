"""Agent mode with the real models: koe answers the simulated caller with its own voice, at the stream's rate;
the caller interrupts and koe flushes its reply with StopAudio; a caller hanging up mid-reply frees the session.
What the embedded model answers is its own: the caller must hear the reply's own transcript, whatever it says; the
barge-in test interrupts a stand-in LLM's fixed story, which is surely still playing."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import numpy as np
import pytest

from koe.audio.resample import resample
from koe.engines.registry import Engines
from koe.server.metrics import METRICS
from koe.sim.acs.media import MediaOptions, MediaStream
from koe.sim.acs.participants import CallAudio, Participant, acs_raw_id, phone_raw_id
from tests.conftest import load_wav
from tests.engines.openai_standin import scripted_engines
from tests.server.acs.support import RecordingTTS, acs_settings, assert_sent_speech, koe_server, record_outbound

pytestmark = [pytest.mark.models, pytest.mark.timeout(120)]


def _voice(name: str, rate: int) -> np.ndarray:
    if rate == 16000:
        return load_wav(f"{name}_16k.wav")[0]
    pcm, source = load_wav(f"{name}_48k.wav")
    return resample(pcm, source, rate)


@pytest.mark.parametrize(("rate", "mixed"), [(16000, True), (24000, False)])
async def test_koe_answers_in_its_own_voice_at_the_stream_rate(engines: Engines, rate: int, mixed: bool) -> None:
    # Three people on the line; one asks, the other two only listen (silent channels when unmixed).
    quiet = np.zeros(rate // 2, dtype=np.int16)
    people = [
        Participant(phone_raw_id(1), _voice("short", rate)),
        Participant(acs_raw_id(), quiet),
        Participant(phone_raw_id(2), quiet),
    ]
    audio = CallAudio(people, rate, mixed=mixed, tail_ms=200)
    tts = RecordingTTS(engines.tts)
    async with koe_server(acs_settings(mode="agent"), replace(engines, tts=tts)) as (base, app):
        url = base.replace("http", "ws") + "/acs/media"
        options = MediaOptions(
            url, rate, call_connection_id=f"agent-{rate}", speed=3.0, reply_timeout_ms=30000, linger_ms=1000
        )
        stream = MediaStream(options, audio)
        outbound = record_outbound(stream)
        report = await stream.run()
        call = app.state.calls.get(f"agent-{rate}")
    assert report.violations == []
    assert report.outbound_audio_bytes > 0
    assert report.outbound_audio_bytes % 2 == 0
    assert call is not None
    kinds = [event["type"] for event in call.recent]
    assert "transcript.completed" in kinds
    assert "response.started" in kinds
    said = " ".join(e["text"] for e in call.recent if e["type"] == "response.text")
    # What koe sent is the audio its TTS made for the reply's text, chunk after chunk (from its start: the caller
    # hangs up a second after the audio pauses, which at three times real time can be before the reply's end).
    sent = assert_sent_speech(bytes(outbound), tts.chunks, rate)
    assert all(text.strip() in said for text in sent), (sent, said)


async def test_barge_in_flushes_the_reply_with_stop_audio(engines: Engines) -> None:
    rate = 16000
    audio = CallAudio([Participant(phone_raw_id(1), _voice("short", rate))], rate, tail_ms=200)
    async with scripted_engines(engines) as scripted, koe_server(acs_settings(mode="agent"), scripted) as (base, app):
        url = base.replace("http", "ws") + "/acs/media"
        options = MediaOptions(
            url,
            rate,
            call_connection_id="agent-barge",
            speed=1.0,  # real time: barge-in timing is the point
            reply_timeout_ms=20000,
            linger_ms=500,
            barge_in=(phone_raw_id(1), _voice("utterance", rate)[: rate * 3 // 2]),
            barge_in_after_ms=600,
        )
        report = await MediaStream(options, audio).run()
        call = app.state.calls.get("agent-barge")
    assert report.stop_audio >= 1
    assert report.barge_ins, report.as_dict()
    first = report.barge_ins[0]
    assert first.latency_ms > 0
    assert first.dropped_ms > 0
    assert call is not None
    events = list(call.recent)
    assert any(e["type"] == "barge_in" for e in events)
    assert any(e["type"] == "response.done" and e["status"] == "cancelled" for e in events)


async def test_hang_up_mid_reply_frees_the_session(engines: Engines) -> None:
    rate = 16000
    audio = CallAudio([Participant(phone_raw_id(1), _voice("short", rate))], rate, tail_ms=200)
    active_before = _active_acs_sessions()
    async with koe_server(acs_settings(mode="agent"), engines) as (base, app):
        url = base.replace("http", "ws") + "/acs/media"
        options = MediaOptions(
            url, rate, call_connection_id="agent-gone", speed=2.0, reply_timeout_ms=30000, hang_up_after_playing_ms=300
        )
        report = await MediaStream(options, audio).run()
        assert report.closed_by == "simulator"
        assert report.outbound_audio_bytes > 0
        for _ in range(200):
            call = app.state.calls.get("agent-gone")
            pipelines = [t for t in asyncio.all_tasks() if t.get_name() == "acs-agent-agent-gone" and not t.done()]
            busy = [pool.name for pool in engines.pools() if pool.active or pool.depth]
            if call is not None and call.state == "ended" and not pipelines and not busy:
                break
            await asyncio.sleep(0.05)
        assert call is not None
        assert call.state == "ended"
        assert not pipelines
        assert not busy
        # The session no longer counts as active (it stayed one higher per hang-up before: issue 14).
        assert _active_acs_sessions() == active_before
        # and koe keeps serving
        echo = await MediaStream(MediaOptions(url + "?mode=echo", rate, speed=0), audio).run()
        assert echo.outbound_audio_bytes > 0


def _active_acs_sessions() -> float:
    return METRICS.registry.get_sample_value("koe_sessions_active", {"door": "acs"}) or 0.0
