"""DTMF tones reach the ACS agent's conversation (issue 14, must-hold 5): the keys a caller presses become one user
text item, `DTMF: 1 2 #`, after `acs.dtmf_timeout_ms` without a tone (or at once after `#`); with `acs.dtmf =
"reply"` koe answers it, with `"item"` the next spoken turn carries it, with `"ignore"` the agent never sees it.

The LLM is the OpenAI-compatible stand-in (`tests/engines/openai_standin.py`): what the agent was asked is read from
the chat-completions requests it received, never from what a model answered.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from koe.engines.llm_openai import OpenAICompatibleLLM
from koe.engines.registry import Engines
from koe.server.acs.modes.dtmf import MAX_TONES, DtmfCollector, symbol
from koe.sim.acs.media import MediaOptions, MediaStream
from koe.sim.acs.participants import CallAudio, Participant, phone_raw_id
from tests.conftest import load_wav
from tests.engines.openai_standin import StandIn
from tests.server.acs.support import acs_settings, koe_server

RATE = 16000
CALLER = phone_raw_id(1)


# --- the collector ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tone", "key"),
    [("5", "5"), ("#", "#"), ("*", "*"), ("pound", "#"), ("Asterisk", "*"), ("nine", "9"), ("a", "A"), ("D", "D")],
)
def test_both_spellings_of_a_tone_name_its_key(tone: str, key: str) -> None:
    assert symbol(tone) == key


@pytest.mark.parametrize("tone", ["", "E", "10", "hello", "##"])
def test_a_tone_that_names_no_key_is_refused(tone: str) -> None:
    assert symbol(tone) is None


async def test_keys_are_sent_after_the_inter_digit_timeout_or_at_once_after_pound() -> None:
    sent: list[str] = []
    collector = DtmfCollector(0.05, sent.append)
    assert collector.press("1") and collector.press("two")
    assert sent == []
    await asyncio.sleep(0.1)
    assert sent == ["DTMF: 1 2"]
    assert collector.press("3") and collector.press("pound")
    assert sent == ["DTMF: 1 2", "DTMF: 3 #"]  # no wait after the terminator
    assert not collector.press("bogus")
    for _ in range(MAX_TONES + 1):
        collector.press("7")
    assert sent[-1] == "DTMF: " + " ".join(["7"] * MAX_TONES)
    collector.close()  # the one key left waits no more
    await asyncio.sleep(0.1)
    assert len(sent) == 3


# --- through the door, to the stand-in LLM -------------------------------------------------------------------------


@asynccontextmanager
async def _agent(engines: Engines, **acs: Any) -> AsyncIterator[tuple[str, StandIn, Any]]:
    async with StandIn() as standin:
        llm = OpenAICompatibleLLM(standin.base_url, "standin-model", api_key="sk-test")
        try:
            settings = acs_settings(mode="agent", dtmf_timeout_ms=300, **acs)
            async with koe_server(settings, replace(engines, llm=llm)) as (base, app):
                yield base.replace("http", "ws") + "/acs/media", standin, app
        finally:
            await llm.aclose()


def _user_messages(standin: StandIn) -> list[list[str]]:
    """Per request the LLM received, the user messages' texts."""
    return [[m["content"] for m in r.body["messages"] if m["role"] == "user"] for r in standin.requests]


def _call(url: str, call_id: str, audio: np.ndarray, tones: list[tuple[int, str]]) -> MediaStream:
    options = MediaOptions(
        url,
        RATE,
        call_connection_id=call_id,
        enable_dtmf=True,
        dtmf=tones,
        speed=2.0,
        reply_timeout_ms=10_000,
        linger_ms=300,
    )
    return MediaStream(options, CallAudio([Participant(CALLER, audio)], RATE, tail_ms=200))


TONES = [(200, "1"), (400, "2"), (600, "pound")]
SILENCE = np.zeros(RATE * 2, dtype=np.int16)


@pytest.mark.models
@pytest.mark.timeout(120)
async def test_keys_pressed_are_a_user_item_that_koe_answers(engines: Engines) -> None:
    async with _agent(engines) as (url, standin, app):
        report = await _call(url, "dtmf-reply", SILENCE, TONES).run()
        call = app.state.calls.get("dtmf-reply")
    assert report.violations == []
    assert [messages[-1] for messages in _user_messages(standin)] == ["DTMF: 1 2 #"]
    assert report.outbound_audio_bytes > 0  # the stand-in's reply was spoken
    assert call is not None
    kinds = [event["type"] for event in call.recent]
    assert kinds.count("dtmf") == 3 and "response.started" in kinds


@pytest.mark.models
@pytest.mark.timeout(120)
async def test_item_mode_gives_the_keys_to_the_next_spoken_turn(engines: Engines) -> None:
    speech = load_wav("short_16k.wav")[0]
    audio = np.concatenate([np.zeros(RATE, dtype=np.int16), speech])  # keys in the first second, then a question
    async with _agent(engines, dtmf="item") as (url, standin, _app):
        await _call(url, "dtmf-item", audio, TONES).run()
    (messages,) = _user_messages(standin)  # one request: the spoken turn's, the keys before it
    assert messages[0] == "DTMF: 1 2 #"
    assert "weather" in messages[-1].lower()


@pytest.mark.models
@pytest.mark.timeout(120)
async def test_ignore_mode_keeps_the_keys_out_of_the_conversation(engines: Engines) -> None:
    async with _agent(engines, dtmf="ignore") as (url, standin, app):
        await _call(url, "dtmf-ignore", SILENCE, TONES).run()
        call = app.state.calls.get("dtmf-ignore")
    assert standin.requests == []
    assert call is not None
    assert [event["tone"] for event in call.recent if event["type"] == "dtmf"] == ["1", "2", "pound"]
