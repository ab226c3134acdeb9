"""Sora's audio streaming rules (its documentation, in the spec's "Sora's side"): every row of the combination
tables, the Start/Stop APIs, auto mode and push subscriptions."""

from __future__ import annotations

import pytest

from koe.sim.sora.channel import (
    SESSION_START,
    Channel,
    ChannelSettings,
    CloseStream,
    OpenStream,
    SoraApiError,
    Webhook,
)

# Sora's first table: (audio_streaming, audio_streaming_auto, subscribers) → is the publisher connected?
CONNECTED_TABLE = [
    (True, True, 0, False),
    (True, True, 1, True),
    (True, False, 0, True),
    (True, False, 1, True),
    (True, None, 0, True),
    (True, None, 1, True),
    (False, False, 0, False),
    (False, False, 1, False),
    (False, None, 0, False),
    (False, None, 1, False),
    (None, False, 0, False),
    (None, False, 1, False),
    (None, None, 0, False),
    (None, None, 1, False),
    # auto without audio_streaming: invalid, both ignored
    (None, True, 1, False),
    (False, True, 1, False),
]


def _channel(subscribers: int, streaming: bool | None, auto: bool | None) -> tuple[Channel, list[object]]:
    channel = Channel("sora", ChannelSettings(default_audio_streaming_result_push=False))
    actions: list[object] = list(channel.create_session("S", streaming, auto))
    actions += channel.connect("pub", role="sendonly", language_code="en-US")
    for i in range(subscribers):
        actions += channel.connect(f"sub{i}", role="recvonly")
        actions += channel.subscribe(f"sub{i}")
    return channel, actions


@pytest.mark.parametrize(("streaming", "auto", "subscribers", "connected"), CONNECTED_TABLE)
def test_publisher_connected_table(
    streaming: bool | None, auto: bool | None, subscribers: int, connected: bool
) -> None:
    channel, actions = _channel(subscribers, streaming, auto)
    opened = [a for a in actions if isinstance(a, OpenStream)]
    assert (channel.streamed == {"pub"}) is connected
    assert [a.connection.connection_id for a in opened] == (["pub"] if connected else [])


@pytest.mark.parametrize(("streaming", "auto", "subscribers", "connected"), CONNECTED_TABLE)
def test_results_sent_table(streaming: bool | None, auto: bool | None, subscribers: int, connected: bool) -> None:
    channel, _ = _channel(subscribers, streaming, auto)
    targets = channel.push_targets()
    sent = bool(targets)
    assert sent == (connected and subscribers > 0)
    assert set(targets) == ({f"sub{i}" for i in range(subscribers)} if sent else set())


def test_table_covers_every_combination() -> None:
    values = (True, False, None)
    assert set(SESSION_START) == {(a, b) for a in values for b in values}


@pytest.mark.parametrize(
    ("role", "audio", "language", "streamed"),
    [
        ("sendrecv", True, "en-US", True),
        ("sendonly", True, "ja-JP", True),
        ("recvonly", True, "en-US", False),
        ("sendrecv", False, "en-US", False),
        ("sendrecv", True, None, False),  # no language code: never streamed
    ],
)
def test_which_connections_are_streamed(role: str, audio: bool, language: str | None, streamed: bool) -> None:
    channel = Channel("sora")
    channel.create_session("S", True)
    actions = channel.connect("c", role=role, audio=audio, language_code=language)  # type: ignore[arg-type]
    assert bool([a for a in actions if isinstance(a, OpenStream)]) is streamed


def test_default_language_code_setting() -> None:
    channel = Channel("sora", ChannelSettings(default_audio_streaming_language_code="ja-JP"))
    channel.create_session("S", True)
    (action,) = channel.connect("c")
    assert isinstance(action, OpenStream)
    assert action.language_code == "ja-JP"


def test_start_and_stop_api() -> None:
    channel = Channel("sora", ChannelSettings(default_audio_streaming_result_push=True))
    channel.create_session("S")
    assert channel.connect("a", language_code="en-US") == []
    channel.connect("b", language_code="en-US")
    with pytest.raises(SoraApiError, match="not streaming"):
        channel.stop_audio_streaming()
    actions = channel.start_audio_streaming()
    assert isinstance(actions[0], Webhook)
    assert actions[0].type == "audio-streaming.started"
    assert {a.connection.connection_id for a in actions if isinstance(a, OpenStream)} == {"a", "b"}
    with pytest.raises(SoraApiError, match="already streaming"):
        channel.start_audio_streaming()
    channel.unsubscribe("a")
    late = channel.connect("c", language_code="en-US")  # joins while streaming: gets its own stream
    assert [type(a) for a in late] == [OpenStream]
    actions = channel.stop_audio_streaming()
    assert {a.connection_id for a in actions if isinstance(a, CloseStream)} == {"a", "b", "c"}
    assert isinstance(actions[-1], Webhook)
    assert actions[-1].type == "audio-streaming.stopped"
    assert channel.push_states()[0] == {"connection_id": "a", "subscribe": True}  # reset to the default


def test_auto_mode_follows_subscribers_and_refuses_the_apis() -> None:
    channel = Channel("sora", ChannelSettings(default_audio_streaming_result_push=False))
    assert channel.create_session("S", True, True) == []
    assert channel.connect("pub", language_code="en-US") == []
    with pytest.raises(SoraApiError, match="auto mode"):
        channel.start_audio_streaming()
    with pytest.raises(SoraApiError, match="auto mode"):
        channel.stop_audio_streaming()
    actions = channel.subscribe("pub")
    assert [type(a) for a in actions] == [Webhook, OpenStream]
    assert actions[0] == Webhook("audio-streaming.started", actions[0].data)
    assert actions[0].data["audio_streaming_auto"] is True
    assert channel.subscribe("pub") == []
    actions = channel.unsubscribe("pub")
    assert [type(a) for a in actions] == [CloseStream, Webhook]
    assert not channel.streaming
    # Auto mode only ends with the session.
    channel.terminate_session()
    channel.create_session("S2", True)
    assert not channel.auto


def test_session_ends_when_the_last_client_leaves() -> None:
    channel = Channel("sora")
    channel.create_session("S", True)
    channel.connect("a", language_code="en-US")
    actions = channel.disconnect("a")
    assert [type(a) for a in actions] == [CloseStream, Webhook]
    assert channel.session_id is None
    with pytest.raises(SoraApiError, match="no session"):
        channel.start_audio_streaming()
    channel.create_session("S2")
    with pytest.raises(SoraApiError, match="no connection"):
        channel.subscribe("nobody")
