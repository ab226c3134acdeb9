"""The Redis call registry with a real redis-server: nodes see each other's calls and events, write their own parts
of a call, forward commands to the node with the media, survive a Redis restart, and end a departed node's calls.
The nodes are registries in this process (the real processes are in test_nodes.py)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from koe.bench._redis import RedisServer
from koe.server.calls.registry import CommandResult, Subscription
from koe.server.cluster.registry import RedisCallRegistry
from tests.server.cluster.support import nodes, until


async def _take(subscription: Subscription, count: int, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout_s):
        async for event in subscription:
            events.append(event)
            if len(events) == count:
                break
    return events


def _state(registry: RedisCallRegistry, call_id: str) -> str | None:
    call = registry.get(call_id)
    return call.state if call is not None else None


async def test_a_call_on_one_node_is_listed_and_streamed_on_the_other(redis_server: RedisServer) -> None:
    async with nodes(redis_server, "a", "b") as (a, b):
        a.open("call-1", door="acs", mode="transcribe", correlation_id="corr")
        a.update("call-1", "streaming", sample_rate=16000)
        a.publish("call-1", {"type": "dtmf", "participant": "4:+1555", "tone": "5"})
        await until(lambda: b.get("call-1") is not None and len(b.get("call-1").recent) == 3)  # type: ignore[union-attr]
        call = b.get("call-1")
        assert call is not None
        assert (call.state, call.door, call.node, call.info["sample_rate"]) == ("streaming", "acs", "a", 16000)
        assert [c.id for c in b.calls()] == ["call-1"]
        assert b.calls()[0].snapshot()["node"] == "a"

        subscription = b.subscribe("call-1")  # replays the three, then follows
        everything = b.subscribe(None)
        a.publish("call-1", {"type": "transcript.completed", "participant": "4:+1555", "item_id": "i1", "text": "hi"})
        a.end("call-1", "media stream closed")
        events = await _take(subscription, 5)
        assert [e["type"] for e in events] == [
            "call.started", "call.state", "dtmf", "transcript.completed", "call.ended",
        ]  # fmt: skip
        assert [e["seq"] for e in events] == [1, 2, 3, 4, 5]
        assert all(e["node"] == "a" for e in events)
        assert [e["type"] for e in await _take(everything, 2)] == ["transcript.completed", "call.ended"]
        assert _state(b, "call-1") == "ended"
        assert [entry["text"] for entry in b.get("call-1").transcript] == ["hi"]  # type: ignore[union-attr]


async def test_a_node_that_joins_later_gets_the_calls_already_live(redis_server: RedisServer) -> None:
    async with nodes(redis_server, "a") as (a,):
        a.open("early", door="sora", mode="koe", channel_id="sora")
        a.publish("early", {"type": "participant.joined", "participant": "C1"})
        async with nodes(redis_server, "late") as (late,):
            await until(lambda: late.get("early") is not None)
            call = late.get("early")
            assert call is not None and call.participants.keys() == {"C1"}
            assert [e["type"] for e in call.recent] == ["call.started", "participant.joined"]


async def test_another_node_writes_its_own_part_of_a_call_and_its_hang_up_ends_it(redis_server: RedisServer) -> None:
    async with nodes(redis_server, "media", "callbacks") as (media, callbacks):
        media.open("call-2", door="acs", mode="echo")
        media.update("call-2", "streaming")
        await until(lambda: callbacks.get("call-2") is not None)
        # Call Automation's callbacks reach the other node: it keeps what it learns in a part of its own.
        callbacks.update("call-2", call_connection_state="connected")
        callbacks.publish("call-2", {"type": "acs.callback", "event": "CallConnected"})
        await until(lambda: media.get("call-2").info.get("call_connection_state") == "connected")  # type: ignore[union-attr]
        view = media.get("call-2")
        assert view is not None and view.state == "streaming" and view.node == "media"
        assert [e["type"] for e in view.recent][-1] == "acs.callback"
        callbacks.end("call-2", "call disconnected")
        await until(lambda: _state(media, "call-2") == "ended")
        media.update("call-2", "stopped")  # the media connection closes after the hang-up: the call stays ended
        await asyncio.sleep(0.2)
        assert _state(media, "call-2") == _state(callbacks, "call-2") == "ended"


async def test_commands_run_on_the_node_with_the_media_and_time_out_when_it_does_not_answer(
    redis_server: RedisServer,
) -> None:
    async with nodes(redis_server, "a", "b", command_timeout_s=0.5) as (a, b):

        async def where(call_id: str, args: dict[str, Any]) -> CommandResult:
            if args.get("sleep"):
                await asyncio.sleep(5)
            return CommandResult(202, {"ran_on": "a", "call_id": call_id, **args})

        a.handle("where", where)
        a.open("call-3", door="acs", mode="echo")
        # Call Automation answered on b, so b has a part too, without media: the command still goes to a.
        await until(lambda: b.get("call-3") is not None)
        b.open("call-3", door="acs", mode="echo", media=False, managed=True)
        result = await b.command("call-3", "where", {"action": "stop"})
        assert result == CommandResult(202, {"ran_on": "a", "call_id": "call-3", "action": "stop"})
        late = await b.command("call-3", "where", {"sleep": True})
        assert late.status == 504 and late.body["error"]["code"] == "node_timeout"
        assert "node a" in late.body["error"]["message"]
        assert (await b.command("call-3", "absent", {})).status == 501  # a has no such command, and says so


async def test_a_node_that_leaves_ends_its_calls_on_the_others_and_theirs_go_on(redis_server: RedisServer) -> None:
    async with nodes(redis_server, "stays") as (stays,):
        stays.open("mine", door="sora", mode="test")
        stays.update("mine", "streaming")
        leaving = RedisCallRegistry(stays.settings, node_id="leaving")
        await leaving.start()
        leaving.open("theirs", door="acs", mode="echo")
        leaving.update("theirs", "streaming")
        await until(lambda: _state(stays, "theirs") == "streaming")
        subscription = stays.subscribe("theirs")
        await leaving.close()  # says Bye: no need to wait for its heartbeat to lapse
        events = await _take(subscription, 3)
        assert events[-1]["type"] == "call.ended" and "leaving left the cluster" in events[-1]["reason"]
        assert _state(stays, "theirs") == "ended"
        assert stays.get("theirs").info["node_lost"] == "leaving"  # type: ignore[union-attr]
        assert _state(stays, "mine") == "streaming"


async def test_a_redis_restart_loses_no_live_call(redis_server: RedisServer) -> None:
    async with nodes(redis_server, "a", "b") as (a, b):
        a.open("call-4", door="acs", mode="echo")
        a.update("call-4", "streaming")
        b.open("call-5", door="sora", mode="test")
        b.update("call-5", "streaming")
        await until(lambda: _state(a, "call-5") == "streaming" and _state(b, "call-4") == "streaming")
        subscription = b.subscribe("call-4", replay=False)

        redis_server.kill()
        await until(lambda: a.status()["redis"] == "down" and b.status()["redis"] == "down")
        a.publish("call-4", {"type": "dtmf", "participant": "p", "tone": "1"})  # published while down: missed
        redis_server.start()  # empty: the streams and heartbeats are gone
        await until(lambda: a.status()["redis"] == "up" and b.status()["redis"] == "up")
        await until(lambda: len(b.get("call-4").recent) == 3)  # type: ignore[union-attr]  # resent: with the dtmf

        a.publish("call-4", {"type": "dtmf", "participant": "p", "tone": "2"})
        events = await _take(subscription, 1)
        assert events[0]["tone"] == "2"
        await asyncio.sleep(2.5)  # longer than the TTL: nobody was declared dead
        assert _state(a, "call-5") == _state(b, "call-4") == "streaming"
        assert a.status()["lost_nodes"] == b.status()["lost_nodes"] == []


def test_without_a_redis_url_the_registry_is_the_in_process_one_as_before() -> None:
    from koe.config import Settings
    from koe.server.calls.registry import CallRegistry
    from koe.server.cluster import call_registry

    registry = call_registry(Settings())
    assert type(registry) is CallRegistry and registry.status() is None
    registry.open("solo", door="acs", mode="echo")
    event = registry.publish("solo", {"type": "dtmf", "participant": "p", "tone": "1"})
    assert "node" not in event and "node" not in registry.get("solo").snapshot()  # type: ignore[union-attr]


async def test_after_a_reconnection_other_nodes_get_at_least_the_reconnect_backoff_to_come_back() -> None:
    # After a Redis restart the nodes reconnect at different moments: one may still wait out its backoff (up to
    # RECONNECT_MAX_S) while another is back, and must not be declared lost meanwhile (a short TTL once did).
    from koe.server.cluster.link import HEARTBEAT_SHARE, RECONNECT_MAX_S, RedisLink

    def grace(ttl_s: float) -> float:
        link = RedisLink("redis://127.0.0.1:1", "n", prefix="koe", ttl_s=ttl_s, listener=None)  # type: ignore[arg-type]
        return link.reconnect_grace_s()  # nothing connects: the link is never started

    assert grace(2.0) == RECONNECT_MAX_S + HEARTBEAT_SHARE * 2.0
    assert grace(30.0) == 15.0  # half the TTL once that is longer


async def test_the_link_stops_a_task_that_swallowed_its_cancellation() -> None:
    # redis-py can swallow a cancellation that lands mid-read; a node's close once hung on such a task.
    from koe.server.cluster.link import _stopped

    async def stubborn() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(30)
        await asyncio.sleep(30)

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    assert await _stopped({task})
    assert task.cancelled()
