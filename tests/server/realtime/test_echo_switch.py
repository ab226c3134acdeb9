"""Switching koe's echo canceller from a Realtime session: the Azure dialect's `input_audio_echo_cancellation`, and
on the GA dialect (which has no such setting) koe's own `audio.input.koe_echo_cancellation` with the same values.
A session starts with `audio.echo_cancellation` from koe's config; `null` turns it off, an object turns it on."""

from __future__ import annotations

import json
from typing import Any

import pytest
from websockets.asyncio.client import connect

from koe.config import load_settings
from koe.engines.registry import Engines
from koe.protocols.realtime import Dialect, RealtimeError, SessionConfig, apply_session_update
from koe.protocols.realtime._session_parse import parse_session
from koe.protocols.realtime.session import EchoCancellation
from koe.server.realtime.mapping import engine_config
from tests.protocols.realtime.conftest import check_event
from tests.server.acs.support import koe_server

ON = {"type": "server_echo_cancellation"}


def _echo(config: SessionConfig) -> bool:
    return engine_config(config, None).config.echo_cancellation


def _update(config: SessionConfig, session: dict[str, Any], dialect: Dialect) -> SessionConfig:
    patch, warnings = parse_session(session, dialect)
    assert warnings == []
    return apply_session_update(config, patch)


@pytest.mark.parametrize("configured", [True, False])
def test_ga_switch_turns_the_canceller_off_and_on(configured: bool) -> None:
    config = SessionConfig(input_audio_echo_cancellation=EchoCancellation() if configured else None)
    assert _echo(config) is configured
    off = _update(config, {"audio": {"input": {"koe_echo_cancellation": None}}}, Dialect.GA)
    assert _echo(off) is False
    on = _update(off, {"audio": {"input": {"koe_echo_cancellation": ON}}}, Dialect.GA)
    assert _echo(on) is True
    unrelated = _update(on, {"instructions": "Be brief.", "audio": {"input": {"noise_reduction": None}}}, Dialect.GA)
    assert _echo(unrelated) is True


def test_azure_null_turns_it_off_even_when_koe_enables_it() -> None:
    config = SessionConfig(input_audio_echo_cancellation=EchoCancellation())
    off = _update(config, {"input_audio_echo_cancellation": None}, Dialect.AZURE)
    assert _echo(off) is False


def test_ga_switch_rejects_a_wrong_value() -> None:
    with pytest.raises(RealtimeError) as caught:
        parse_session({"audio": {"input": {"koe_echo_cancellation": "on"}}}, Dialect.GA)
    assert caught.value.param == "session.audio.input.koe_echo_cancellation"


@pytest.mark.parametrize("configured", [True, False])
async def test_sessions_start_as_koe_is_configured(configured: bool) -> None:
    settings = load_settings(overrides={"audio": {"echo_cancellation": configured}})
    async with koe_server(settings, Engines()) as (base, _app):
        async with connect(f"ws{base[4:]}/voice-live/realtime?model=koe") as ws:
            created = json.loads(await ws.recv())
            check_event(created, Dialect.AZURE)
            assert created["session"]["input_audio_echo_cancellation"] == (ON if configured else None)
        async with connect(f"ws{base[4:]}/v1/realtime?model=koe") as ws:
            check_event(json.loads(await ws.recv()), Dialect.GA)
            update = {"audio": {"input": {"koe_echo_cancellation": None}}}
            await ws.send(json.dumps({"type": "session.update", "session": update}))
            updated = json.loads(await ws.recv())
            assert updated["type"] == "session.updated", updated
            check_event(updated, Dialect.GA)
