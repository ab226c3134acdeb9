"""ACS drops the media WebSocket mid-call and reconnects (issue 14, must-hold 2): the emulator resets the connection
(no close frame) and opens it again with the same call headers and a fresh `AudioMetadata`. The call goes on as one
call, and its transcripts are neither lost nor duplicated: the turn still open when the connection dropped is
finished from the audio already received, the next one is heard on the new connection."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from koe.engines.registry import Engines
from koe.sim.acs.media import MediaOptions, MediaStream
from koe.sim.acs.participants import CallAudio, Participant, phone_raw_id
from tests.conftest import load_wav
from tests.server.acs.support import acs_settings, koe_server
from tests.wer import wer

pytestmark = [pytest.mark.models, pytest.mark.timeout(120)]

RATE = 16000
MAX_WER = 0.2


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
    # Known gap: koe has no reconnect grace yet, so when it handles the drop before the new connection arrives, the
    # call shows `call.ended` once in between and is then taken up again (same call, same transcripts). What it
    # must never do is end it twice or leave it ended.
    assert kinds.count("call.ended") <= 2
