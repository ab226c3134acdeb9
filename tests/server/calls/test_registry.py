"""The call registry shared by every door: states, the end of a call, and its subscribers."""

from __future__ import annotations

from koe.server.calls.registry import CallRegistry


async def test_an_ended_call_stays_ended_when_its_media_finishes_draining_later() -> None:
    registry = CallRegistry()
    registry.open("call-1", door="acs", mode="transcribe", managed=True)
    registry.update("call-1", "streaming")
    subscription = registry.subscribe("call-1")
    registry.end("call-1", "call disconnected")  # Call Automation's CallDisconnected
    registry.update("call-1", "stopped", stream={"frames": 10})  # the media connection closes afterwards
    call = registry.get("call-1")
    assert call is not None and call.state == "ended" and call.info["stream"] == {"frames": 10}
    events = [event async for event in subscription]
    assert [e["type"] for e in events][-1] == "call.ended"
    assert [e.get("state") for e in events if e["type"] == "call.state"] == ["streaming"]


def test_a_reconnecting_stream_revives_an_ended_call() -> None:
    registry = CallRegistry()
    registry.open("call-2", door="acs", mode="transcribe")
    registry.end("call-2", "media stream closed")
    registry.open("call-2", door="acs", mode="transcribe")  # ACS reconnects the same call
    registry.update("call-2", "streaming")
    call = registry.get("call-2")
    assert call is not None and call.state == "streaming" and call.ended_at is None
